//! The failover drill: a stateful workload writes a log to a shared block device from lab
//! node A; A is cut off from the lab network but keeps running; a reference controller sees
//! A lost, has it fenced, and only then starts the workload on node B. The log then shows
//! whether two copies ever wrote at once.
//!
//! - [`record`]: the on-disk record (pure encode/decode).
//! - [`volume`]: O_DIRECT log reading and writing, and the checker ([`volume::check`]).
//! - [`controller`]: the reference controller: heartbeats, the fencing decision, failover,
//!   and the timeline it reports. It reaches the fencer through the [`controller::Fencer`]
//!   trait, so its decisions are tested against scripted fencers too.
//! - [`fencer`]: that trait over the real fencer API (`fenced::client` on the Unix socket).
//! - [`failover`]: one drill end to end (lab nodes, BMCs, a real `fenced` process, the
//!   workload, the controller), run by `tests/drill` and `examples/drill.rs`.
//!
//! The workload itself is the `palisade-workload` binary (`write` and `heartbeat`).

pub mod controller;
pub mod failover;
pub mod fencer;
pub mod record;
pub mod volume;

/// `CLOCK_MONOTONIC` now, in nanoseconds: one clock for every process on the machine, so the
/// controller's timeline and the records' timestamps compare.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Feeds one fuzz input to every drill parser (the record decoder, whole and sector by
/// sector, and the heartbeat parser) and checks that whatever decodes encodes back to the
/// same bytes. Used by `hw-tests/fuzz` and replayed by `tests/fuzz_corpus.rs`.
pub fn fuzz_decode(data: &[u8]) {
    for sector in std::iter::once(data).chain(data.chunks(record::SECTOR)) {
        if let Ok(Some(r)) = record::decode(sector) {
            assert_eq!(record::encode(&r).as_ref().map(|s| &s[..]), Some(sector));
        }
    }
    if let Some(node) = controller::parse_heartbeat(data) {
        assert!(!node.is_empty() && !node.contains(' '));
    }
}
