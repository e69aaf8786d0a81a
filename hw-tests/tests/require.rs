//! `hw_tests::require`, the "this test needs X" check: a missing requirement fails the test
//! unless the developer allowed the skip, and every missing one is logged, one whole line each.
//! Explicit policies and log files here, so the environment of the run does not matter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hw_tests::require::{self, obtain_with, Policy, ALLOW_ENV, INSTALL};
use std::panic::{catch_unwind, AssertUnwindSafe};

fn policy(allow: Option<&str>, dir: &tempfile::TempDir) -> Policy {
    Policy {
        allow: allow.map(str::to_string),
        log: dir.path().join("sub/palisade-skips.log"),
    }
}

fn log_lines(p: &Policy) -> Vec<Vec<String>> {
    std::fs::read_to_string(&p.log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn a_missing_requirement_fails_the_test_says_how_to_install_it_and_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(None, &dir);
    let r = catch_unwind(AssertUnwindSafe(|| {
        obtain_with::<()>(
            &p,
            "sbd_peer t1",
            "sbd",
            "Debian package sbd",
            Err("/usr/sbin/sbd is not an executable file".into()),
        )
    }));
    let msg = *r.expect_err("must fail").downcast::<String>().unwrap();
    for part in [
        "sbd_peer t1 needs sbd (Debian package sbd)",
        "/usr/sbin/sbd is not an executable file",
        INSTALL,
        &format!("{ALLOW_ENV}=sbd"),
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg:?}");
    }
    assert_eq!(
        log_lines(&p),
        [[
            "missing",
            "sbd_peer t1",
            "sbd",
            "Debian package sbd",
            "/usr/sbin/sbd is not an executable file"
        ]]
    );
}

#[test]
fn an_allowed_skip_returns_nothing_and_is_logged_as_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(Some("1"), &dir);
    let got = obtain_with::<u8>(&p, "t2", "fuse", "/dev/fuse", Err("no\tfuse\nhere".into()));
    assert_eq!(got, None);
    // A tab or newline in a field would break the log's lines apart.
    assert_eq!(
        log_lines(&p),
        [["skipped", "t2", "fuse", "/dev/fuse", "no fuse here"]]
    );
}

#[test]
fn a_present_requirement_hands_back_its_value_and_logs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(None, &dir);
    assert_eq!(obtain_with(&p, "t3", "tmpfs", "mount", Ok(7)), Some(7));
    assert!(!p.log.exists());
}

#[test]
fn only_the_named_requirements_may_be_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(Option<&str>, &[&str], &[&str]); 6] = [
        (None, &[], &["sbd"]),
        (Some(""), &[], &["sbd"]),
        (Some("0"), &[], &["sbd"]),
        (Some("all"), &["sbd", "fuse"], &[]),
        (
            Some("fuse, blkio-throttle"),
            &["fuse", "blkio-throttle"],
            &["sbd", "tmpfs"],
        ),
        (Some("sbd,FUSE"), &["sbd", "fuse"], &["fence_sbd"]),
    ];
    for (allow, yes, no) in cases {
        let p = policy(allow, &dir);
        for n in yes {
            assert!(p.allows(n), "{allow:?} allows {n}");
        }
        for n in no {
            assert!(!p.allows(n), "{allow:?} does not allow {n}");
        }
    }
    // Allowed or not, each missing requirement is one line, in order.
    let p = policy(Some("fuse"), &dir);
    assert_eq!(
        obtain_with::<()>(&p, "a", "fuse", "x", Err("e".into())),
        None
    );
    let r = catch_unwind(AssertUnwindSafe(|| {
        obtain_with::<()>(&p, "b", "sbd", "x", Err("e".into()))
    }));
    assert!(r.is_err());
    let status: Vec<_> = log_lines(&p).into_iter().map(|l| l[0].clone()).collect();
    assert_eq!(status, ["skipped", "missing"]);
}

/// nextest runs every test in a process of its own, all appending to one log: each line is one
/// write(2) on an O_APPEND descriptor, so concurrent writers never split or overwrite lines.
#[test]
fn concurrent_writers_leave_every_line_whole() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(Some("1"), &dir);
    let why = "w".repeat(300);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (p, why) = (&p, &why);
            s.spawn(move || {
                for i in 0..200 {
                    let test = format!("writer{t} test{i}");
                    assert_eq!(
                        obtain_with::<()>(p, &test, "fuse", "x", Err(why.clone())),
                        None
                    );
                }
            });
        }
    });
    let lines = log_lines(&p);
    assert_eq!(lines.len(), 1600);
    assert!(lines.iter().all(|l| l.len() == 5 && l[4] == why));
}

#[test]
fn command_finds_executables_on_path_or_at_a_given_path() {
    assert_eq!(require::command("sh"), Ok(()));
    assert_eq!(require::command("/bin/sh"), Ok(()));
    let e = require::command("palisade-no-such-tool").unwrap_err();
    assert!(e.contains("not on PATH"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    assert!(
        require::command(plain.to_str().unwrap()).is_err(),
        "not executable"
    );
    assert!(
        require::command(dir.path().to_str().unwrap()).is_err(),
        "a directory"
    );
}

#[test]
fn the_current_test_is_named_as_nextest_names_it() {
    assert_eq!(
        require::current_test(),
        "hw-tests::require the_current_test_is_named_as_nextest_names_it"
    );
}
