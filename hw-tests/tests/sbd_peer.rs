//! Interop and lie tests of Palisade's SBD code against the real peer, Debian's ClusterLabs
//! `sbd` 1.5.2, and its `fence_sbd` agent, on real loop devices.
//!
//! Safety (shared/PEERS.md): sbd's watcher is never started here; only its admin commands run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use drivers::sbd::{self, deliver, BlockDevice, DeliveryError, Disk, Message, PillDisk, SbdError};
use hw_tests::loopdev::{self, LoopDevice};
use hw_tests::require;
use hw_tests::throttle::Throttle;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SBD: &str = "/usr/sbin/sbd";
const FENCE_SBD: &str = "/usr/sbin/fence_sbd";
const IO: Duration = Duration::from_secs(3);

fn ready() -> bool {
    require::needs_command(SBD, "Debian package sbd") && loopdev::require()
}

struct Run {
    rc: i32,
    out: String,
    err: String,
    took: Duration,
}

fn finish(o: Output, took: Duration) -> Run {
    Run {
        rc: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
        took,
    }
}

fn dev_args(devs: &[&LoopDevice]) -> Vec<String> {
    devs.iter()
        .flat_map(|d| ["-d".to_string(), d.arg()])
        .collect()
}

/// Runs Debian's sbd (admin commands only) with a clean environment.
fn sbd(devs: &[&LoopDevice], args: &str) -> Run {
    let t = Instant::now();
    let o = Command::new(SBD)
        .env_remove("SBD_DEVICE")
        .env("SBD_PACEMAKER", "no")
        .args(dev_args(devs))
        .args(["-n", "fencer"])
        .args(args.split_whitespace())
        .output()
        .unwrap();
    finish(o, t.elapsed())
}

/// Runs our palisade-sbd with the same arguments, ignoring this machine's /etc/default/sbd.
fn ours(devs: &[&LoopDevice], args: &str) -> Run {
    let t = Instant::now();
    let o = Command::new(hw_tests::bins::palisade_sbd())
        .env_remove("SBD_DEVICE")
        .env("PALISADE_SBD_CONFIG", "")
        .args(dev_args(devs))
        .args(["-n", "fencer"])
        .args(args.split_whitespace())
        .output()
        .unwrap();
    finish(o, t.elapsed())
}

fn loops(n: usize) -> Vec<LoopDevice> {
    (0..n).map(|_| LoopDevice::new(16, None).unwrap()).collect()
}

fn refs(v: &[LoopDevice]) -> Vec<&LoopDevice> {
    v.iter().collect()
}

fn raw(d: &LoopDevice, sectors: usize) -> Vec<u8> {
    let b = std::fs::read(d.path()).unwrap();
    b[..sectors * 512].to_vec()
}

#[test]
fn disks_created_by_sbd_dump_and_list_identically_with_ours() {
    if !ready() {
        return;
    }
    let v = loops(3);
    let d = refs(&v);
    let c = sbd(&d, "-1 5 -4 10 create");
    assert_eq!(c.rc, 0, "{}", c.err);
    assert_eq!(sbd(&d, "allocate alpha").rc, 0);
    let a = ours(&d, "allocate Beta");
    assert_eq!(a.rc, 0, "{}", a.err);
    assert!(a.out.contains("Slot for Beta has been allocated on"));
    let (s, o) = (sbd(&d, "dump"), ours(&d, "dump"));
    assert_eq!((s.rc, o.rc), (0, 0));
    assert_eq!(o.out, s.out, "dump output identical");
    let (s, o) = (sbd(&d, "list"), ours(&d, "list"));
    assert_eq!((s.rc, o.rc), (0, 0));
    assert_eq!(o.out, s.out, "list output identical");
    assert_eq!(
        o.out.lines().count(),
        6,
        "two nodes on three disks: {}",
        o.out
    );
    // Messages cross on sbd's disk too ("exit" skips msgwait in both, keeping this quick).
    assert_eq!(ours(&d, "message alpha exit").rc, 0);
    assert_eq!(sbd(&d, "message Beta exit").rc, 0);
    let (s, o) = (sbd(&d, "list"), ours(&d, "list"));
    assert_eq!(o.out, s.out);
    assert_eq!(o.out.matches("\texit\tfencer").count(), 6, "{}", o.out);
    // Allocating an existing name (any case, like sbd's strncasecmp) reuses its slot.
    let again = ours(&d[..1], "allocate ALPHA");
    assert!(again.out.contains("has been allocated"));
    assert!(!again.out.contains("trying to own"), "{}", again.out);
}

#[test]
fn disks_created_by_ours_are_byte_identical_to_sbds_but_for_the_uuid() {
    if !ready() {
        return;
    }
    let v = loops(2);
    let c = ours(&[&v[0]], "-1 7 -2 3 -3 2 -4 14 create");
    assert_eq!(c.rc, 0, "{}", c.err);
    assert!(c.out.contains("Creating version 2.1 header on device"));
    assert!(c.out.contains("Device /dev/loop"));
    assert_eq!(sbd(&[&v[1]], "-1 7 -2 3 -3 2 -4 14 create").rc, 0);
    let (a, b) = (raw(&v[0], 511), raw(&v[1], 511));
    assert_eq!(a[..33], b[..33], "header up to the UUID");
    assert_ne!(a[33..49], b[33..49], "each disk has its own UUID");
    assert_eq!(
        a[49..],
        b[49..],
        "rest of the header, every node entry and mailbox"
    );
    assert_eq!(a[33 + 6] >> 4, 4, "random (version 4) UUID like libuuid's");
    // sbd reads ours.
    let s = sbd(&[&v[0]], "dump");
    assert_eq!(s.rc, 0);
    assert!(s.out.contains("Timeout (msgwait)  : 14"));
    assert_eq!(sbd(&[&v[0]], "allocate n1").rc, 0);
    assert_eq!(ours(&[&v[0]], "list").out, "0\tn1\tclear\t\n");
}

#[test]
fn sector_size_4096_disks_interoperate() {
    if !ready() {
        return;
    }
    let a = LoopDevice::new(16, Some(4096)).unwrap();
    let b = LoopDevice::new(16, Some(4096)).unwrap();
    assert_eq!(sbd(&[&a], "create").rc, 0);
    assert_eq!(ours(&[&b], "create").rc, 0);
    for d in [&a, &b] {
        let (s, o) = (sbd(&[d], "dump"), ours(&[d], "dump"));
        assert_eq!(o.out, s.out);
        assert!(o.out.contains("Sector size        : 4096"));
    }
    assert_eq!(ours(&[&a], "allocate n1").rc, 0);
    assert_eq!(sbd(&[&b], "allocate n1").rc, 0);
    assert_eq!(sbd(&[&a], "list").out, ours(&[&a], "list").out);
    assert_eq!(sbd(&[&b], "list").out, ours(&[&b], "list").out);
    // The node entry of slot 0 is sector 1, i.e. byte 4096 on these disks.
    let bytes = std::fs::read(a.path()).unwrap();
    assert_eq!(&bytes[4096..4099], b"\x01n1");
}

#[test]
fn messages_written_by_each_are_seen_by_the_other() {
    if !ready() {
        return;
    }
    let v = loops(3);
    let d = refs(&v);
    // msgwait 2 s keeps the test short (watchdog 1 s respects msgwait >= 2 x watchdog).
    assert_eq!(ours(&d, "-1 1 -4 2 create").rc, 0);
    assert_eq!(sbd(&d, "allocate n1").rc, 0);
    assert_eq!(ours(&d, "allocate n2").rc, 0);
    let m = ours(&d, "message n1 reset");
    assert_eq!(m.rc, 0, "{}", m.err);
    assert!(m.took >= Duration::from_secs(2), "waited msgwait like sbd");
    let l = sbd(&d, "list");
    assert_eq!(
        l.out.matches("0\tn1\treset\tfencer").count(),
        3,
        "{}",
        l.out
    );
    let m = sbd(&d, "message n2 off");
    assert_eq!(m.rc, 0);
    let l = ours(&d, "list");
    assert_eq!(l.out.matches("1\tn2\toff\tfencer").count(), 3, "{}", l.out);
    assert_eq!(l.out, sbd(&d, "list").out);
    // exit does not wait msgwait (sbd's slot_msg skips the sleep for exit).
    let e = ours(&d, "message n2 exit");
    assert_eq!(e.rc, 0);
    assert!(e.took < Duration::from_secs(2), "{:?}", e.took);
    assert!(sbd(&d, "list").out.contains("1\tn2\texit\tfencer"));
}

#[test]
fn pill_on_one_of_three_disks_is_a_failure() {
    if !ready() {
        return;
    }
    let v = loops(3);
    let d = refs(&v);
    assert_eq!(ours(&d, "-1 1 -4 2 create").rc, 0);
    // The target's watcher only ever reached disk 0 (slot there, none on the others).
    assert_eq!(ours(&d[..1], "allocate n1").rc, 0);
    let m = ours(&d, "message n1 off");
    assert_eq!(m.rc, 1, "{}", m.err);
    assert!(
        m.err.contains("1 of 3 SBD disks, a majority needs 2"),
        "{}",
        m.err
    );
    assert!(m.took < Duration::from_secs(2), "no msgwait on failure");
    let s = sbd(&d, "message n1 off");
    assert_eq!(s.rc, 1, "sbd agrees it is not delivered");
    // Same through read-only disks: ours names them; one of three written is still a failure.
    let mut ro: Vec<LoopDevice> = (0..2).map(|_| LoopDevice::new(16, None).unwrap()).collect();
    for r in &mut ro {
        assert_eq!(ours(&[r], "-1 1 -4 2 create").rc, 0);
        assert_eq!(ours(&[r], "allocate n1").rc, 0);
        r.reattach_read_only().unwrap();
    }
    let m = ours(&[&v[0], &ro[0], &ro[1]], "message n1 off");
    assert_eq!(m.rc, 1);
    assert!(
        m.err.contains(&ro[0].arg()) && m.err.contains(&ro[1].arg()),
        "{}",
        m.err
    );
}

#[test]
fn target_without_a_slot_is_refused_saying_no_watcher_ran_there() {
    if !ready() {
        return;
    }
    let v = loops(2);
    let d = refs(&v);
    assert_eq!(sbd(&d, "create").rc, 0);
    assert_eq!(sbd(&d, "allocate n1").rc, 0);
    let m = ours(&d, "message ghost off");
    assert_eq!(m.rc, 1);
    assert!(m.err.contains("no SBD watcher ever ran there"), "{}", m.err);
    assert_eq!(sbd(&d, "message ghost off").rc, 1);
    assert_eq!(
        ours(&d, "list").out,
        sbd(&d, "list").out,
        "nothing was written"
    );
}

#[test]
fn replaced_disk_with_another_uuid_is_refused() {
    if !ready() {
        return;
    }
    let v = loops(3);
    let d = refs(&v);
    assert_eq!(ours(&d, "-1 1 -4 2 create").rc, 0);
    assert_eq!(ours(&d, "allocate n1").rc, 0);
    let io = Duration::from_secs(3);
    let disks: Vec<Disk> = v
        .iter()
        .map(|l| Disk::open(l.path(), Instant::now() + io).unwrap())
        .collect();
    let uuids: Vec<[u8; 16]> = disks
        .iter()
        .map(|x| sbd::read_header(x, io).unwrap().uuid)
        .collect();
    // Disk 2 is swapped for a freshly created one (same path, new UUID), by sbd this time.
    assert_eq!(sbd(&[&v[2]], "-1 1 -4 2 create").rc, 0);
    assert_eq!(sbd(&[&v[2]], "allocate n1").rc, 0);
    let pds: Vec<PillDisk<'_>> = disks
        .iter()
        .zip(&uuids)
        .map(|(x, u)| PillDisk {
            dev: x,
            expected_uuid: Some(*u),
        })
        .collect();
    let ok = deliver(&pds, "n1", Message::Off, "fencer", io).unwrap();
    assert_eq!(ok.written.len(), 2);
    assert!(matches!(ok.failed[0], SbdError::UuidMismatch { .. }));
    assert!(ok.failed[0].to_string().contains("replaced or re-created"));
    assert!(
        sbd(&[&v[2]], "list").out.contains("n1\tclear"),
        "nothing written to the impostor"
    );
    // Two of three replaced: no majority.
    assert_eq!(sbd(&[&v[1]], "create").rc, 0);
    let e = deliver(&pds, "n1", Message::Off, "fencer", io).unwrap_err();
    assert!(
        matches!(e, DeliveryError::NoMajority { written: 1, .. }),
        "{e}"
    );
}

#[test]
fn a_read_past_its_deadline_is_abandoned_and_the_device_refused() {
    if !ready() || !Throttle::require() {
        return;
    }
    let l = LoopDevice::new(16, None).unwrap();
    assert_eq!(ours(&[&l], "create").rc, 0);
    let disk = Disk::open(l.path(), Instant::now() + IO).unwrap();
    assert_eq!(disk.sector_size(), sbd::SectorSize::S512);
    let th = Throttle::new(&l.maj_min().unwrap(), 1).unwrap();
    // I/O threads spawned from now on inherit the throttled group: a 512-byte read would take
    // 512 s.
    th.enter_this_thread().unwrap();
    let t = Instant::now();
    let r = disk.read(0, 1, Instant::now() + Duration::from_millis(500));
    th.leave_this_thread().unwrap();
    let took = t.elapsed();
    let e = r.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(e.to_string().contains(&l.arg()), "names the device: {e}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(disk.is_stuck());
    let e2 = disk
        .read(0, 1, Instant::now() + Duration::from_secs(1))
        .unwrap_err();
    assert!(matches!(e2, sbd::DiskError::Stuck { .. }), "{e2}");
    drop(th); // lifts the limit; the abandoned read completes and its result is dropped
    let fresh = Disk::open(l.path(), Instant::now() + IO).unwrap();
    assert!(sbd::read_header(&fresh, IO).is_ok());
}

#[test]
fn list_and_message_with_one_hung_disk_of_three_are_bounded() {
    if !ready() || !Throttle::require() {
        return;
    }
    let v = loops(3);
    let d = refs(&v);
    assert_eq!(ours(&d, "-1 1 -4 2 create").rc, 0);
    assert_eq!(ours(&d, "allocate n1").rc, 0);
    let th = Throttle::new(&v[1].maj_min().unwrap(), 1).unwrap();
    let bin = hw_tests::bins::palisade_sbd();
    let run_in = |args: &str| {
        let t = Instant::now();
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{} exec {} -I 1 {} {}",
                th.shell_prefix(),
                bin.display(),
                dev_args(&d).join(" "),
                args
            ))
            .env("PALISADE_SBD_CONFIG", "")
            .output()
            .unwrap();
        finish(o, t.elapsed())
    };
    let l = run_in("list");
    assert_eq!(l.rc, 1);
    assert!(l.took < Duration::from_secs(4), "bounded: {:?}", l.took);
    assert_eq!(
        l.out.lines().count(),
        2,
        "the two good disks listed: {}",
        l.out
    );
    assert!(
        l.err
            .contains(&format!("== Slots on disk {} NOT dumped", v[1].arg())),
        "{}",
        l.err
    );
    assert!(l.err.contains("did not answer"), "{}", l.err);
    let m = run_in("-n fencer message n1 off");
    assert_eq!(m.rc, 0, "two of three is a majority: {}", m.err);
    assert!(m.took < Duration::from_secs(2 + 4), "{:?}", m.took);
    assert!(
        m.err.contains(&v[1].arg()),
        "the hung disk is named: {}",
        m.err
    );
    drop(th);
    assert_eq!(sbd(&[&v[0], &v[2]], "list").out.matches("off").count(), 2);
}

#[test]
fn fence_sbd_fences_through_palisade_sbd() {
    if !ready() || !require::needs_command(FENCE_SBD, "Debian package fence-agents") {
        return;
    }
    let v = loops(2);
    let d = refs(&v);
    assert_eq!(ours(&d, "-1 1 -4 2 create").rc, 0);
    assert_eq!(sbd(&d, "allocate n1").rc, 0);
    let bin = hw_tests::bins::palisade_sbd();
    let devices = format!("--devices={},{}", v[0].arg(), v[1].arg());
    let agent = |action: &str| {
        let o = Command::new(FENCE_SBD)
            .arg(&devices)
            .arg(format!("--sbd-path={}", bin.display()))
            .args(["--plug=n1", &format!("--action={action}")])
            .env("PALISADE_SBD_CONFIG", "")
            .output()
            .unwrap();
        finish(o, Duration::ZERO)
    };
    let off = agent("off");
    assert_eq!(off.rc, 0, "{} {}", off.out, off.err);
    assert!(off.out.contains("Success: Powered OFF"), "{}", off.out);
    assert_eq!(sbd(&d, "list").out.matches("n1\toff").count(), 2);
    let st = agent("status");
    assert!(st.out.contains("Status: OFF"), "{}", st.out);
    assert!(agent("list").out.contains("n1"));
    let on = agent("on");
    assert_eq!(on.rc, 0, "{}", on.err);
    assert_eq!(sbd(&d, "list").out.matches("n1\tclear").count(), 2);
    let monitor = agent("monitor");
    assert_eq!(monitor.rc, 0, "{}", monitor.err);
}

/// A small tmpfs, unmounted on drop: a loop device over a sparse file on it gets real write
/// errors (ENOSPC) where the file has a hole and the tmpfs is full.
struct SmallTmpfs(tempfile::TempDir);

impl SmallTmpfs {
    fn new(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(SmallTmpfs(dir))
        } else {
            Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// sbd's `slot_msg` tests `mbox_write_verify(...) < -1`, which is never true: a pill whose write
/// failed is still reported delivered (exit 0 after msgwait). Ours reports the failure.
#[test]
fn a_failed_pill_write_is_a_failure_although_sbd_reports_success() {
    if !ready() {
        return;
    }
    let Some(fs) = require::obtain("tmpfs", "root, mount(8) of a tmpfs", SmallTmpfs::new("2M"))
    else {
        return;
    };
    let backing = fs.0.path().join("disk");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let dev = hw_tests::loopdev::attach(&backing, Some(4096))
        .unwrap()
        .display()
        .to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _detach = Detach(dev.clone());
    let run = |bin: &str, args: &[&str]| {
        let t = Instant::now();
        let o = Command::new(bin)
            .args(["-d", &dev, "-n", "fencer"])
            .args(args)
            .env("PALISADE_SBD_CONFIG", "")
            .env("SBD_PACEMAKER", "no")
            .output()
            .unwrap();
        finish(o, t.elapsed())
    };
    assert_eq!(run(SBD, &["-1", "1", "-4", "2", "create"]).rc, 0);
    assert_eq!(run(SBD, &["allocate", "n1"]).rc, 0);
    // With 4096-byte sectors slot 0's mailbox (sector 2) is exactly page 2 of the file: punch
    // it out and fill the tmpfs, so writing the mailbox fails with ENOSPC.
    assert!(Command::new("fallocate")
        .args(["--punch-hole", "--offset", "8192", "--length", "4096"])
        .arg(&backing)
        .status()
        .unwrap()
        .success());
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", fs.0.path().join("fill").display()))
        .output();
    let s = run(SBD, &["message", "n1", "off"]);
    let list = run(SBD, &["list"]);
    assert_eq!(list.out, "0\tn1\tclear\t\n", "nothing was written");
    assert_eq!(s.rc, 0, "sbd's quirk: reports delivered ({})", s.err);
    let o = ours_at(&dev, &["message", "n1", "off"]);
    assert_eq!(o.rc, 1, "ours: not delivered");
    assert!(o.err.contains("No space left on device"), "{}", o.err);
    assert!(o.err.contains("0 of 1 SBD disks"), "{}", o.err);
}

fn ours_at(dev: &str, args: &[&str]) -> Run {
    let t = Instant::now();
    let o = Command::new(hw_tests::bins::palisade_sbd())
        .args(["-d", dev, "-n", "fencer"])
        .args(args)
        .env("PALISADE_SBD_CONFIG", "")
        .output()
        .unwrap();
    finish(o, t.elapsed())
}

#[test]
fn devices_come_from_sbd_device_in_the_config_file_or_environment() {
    if !ready() {
        return;
    }
    let v = loops(2);
    let d = refs(&v);
    assert_eq!(sbd(&d, "create").rc, 0);
    assert_eq!(sbd(&d[..1], "allocate only-on-a").rc, 0);
    assert_eq!(sbd(&d[1..], "allocate only-on-b").rc, 0);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sbd");
    std::fs::write(
        &cfg,
        format!(
            "# as /etc/sysconfig/sbd\nSBD_DEVICE=\"{} ; {}\"\nSBD_PACEMAKER=yes\n",
            v[0].arg(),
            v[1].arg()
        ),
    )
    .unwrap();
    let run = |env_dev: Option<&str>, args: &[&str]| {
        let mut c = Command::new(hw_tests::bins::palisade_sbd());
        c.env("PALISADE_SBD_CONFIG", &cfg).env_remove("SBD_DEVICE");
        if let Some(e) = env_dev {
            c.env("SBD_DEVICE", e);
        }
        String::from_utf8_lossy(&c.args(args).output().unwrap().stdout).into_owned()
    };
    let both = run(None, &["list"]);
    assert!(
        both.contains("only-on-a") && both.contains("only-on-b"),
        "{both}"
    );
    // The environment wins over the file, and -d over both (as with sbd under systemd).
    let env_only = run(Some(&v[1].arg()), &["list"]);
    assert_eq!(env_only, "0\tonly-on-b\tclear\t\n");
    let d_only = run(Some(&v[1].arg()), &["-d", &v[0].arg(), "list"]);
    assert_eq!(d_only, "0\tonly-on-a\tclear\t\n");
    // And sbd reads the same variable from its environment.
    let o = Command::new(SBD)
        .env("SBD_DEVICE", format!("{};{}", v[0].arg(), v[1].arg()))
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), both);
}
