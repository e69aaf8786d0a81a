//! The drill's stateful workload and node agent, run on lab nodes.
//!
//! ```text
//! palisade-workload write --device DEV --node NAME [--interval-ms MS]
//! palisade-workload heartbeat --to ADDR:PORT --node NAME [--interval-ms MS]
//! ```
//!
//! `write` appends to the log on DEV (O_DIRECT, one sector per record) at its end, one
//! record every MS, until killed or the device is full. `heartbeat` sends `hb NAME SEQ` over
//! UDP every MS, and keeps trying when the network drops its datagrams (a cut-off node does
//! not know it is cut off).

use hw_tests::drill::controller::heartbeat;
use hw_tests::drill::mono_ns;
use hw_tests::drill::record::Record;
use hw_tests::drill::volume::{log_end, Slot, Volume};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage:\n  palisade-workload write --device DEV --node NAME [--interval-ms MS]\n  palisade-workload heartbeat --to ADDR:PORT --node NAME [--interval-ms MS]";

struct Args {
    verb: String,
    device: Option<PathBuf>,
    to: Option<String>,
    node: String,
    interval: Duration,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let verb = it.next().ok_or("missing verb")?;
    let (mut device, mut to, mut node, mut interval) = (None, None, None, 5u64);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--device" => device = Some(PathBuf::from(value)),
            "--to" => to = Some(value),
            "--node" => node = Some(value),
            "--interval-ms" => {
                interval = value
                    .parse()
                    .map_err(|_| format!("--interval-ms takes whole milliseconds, not `{value}`"))?
            }
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    Ok(Args {
        verb,
        device,
        to,
        node: node.ok_or("--node is required")?,
        interval: Duration::from_millis(interval),
    })
}

fn write(device: PathBuf, node: String, interval: Duration) -> Result<(), String> {
    let vol = Volume::open(&device, true)
        .map_err(|e| format!("cannot open {} with O_DIRECT: {e}", device.display()))?;
    let log = vol
        .read_log()
        .map_err(|e| format!("cannot read the log on {}: {e}", device.display()))?;
    let (mut at, mut seq) = log_end(&log);
    drivers::errln!("palisade-workload: {node} continues the log at sector {at}, seq {seq}");
    loop {
        // The log is shared: before each append, step over whatever another writer appended
        // since ours (as two database instances that both believe they own one journal).
        // Without that, a second copy would overwrite the first one's records in place and
        // the damage would hide; with it, their records interleave, as they do on a real
        // volume written by two copies at once.
        loop {
            if at >= vol.sectors() {
                return Err(format!("{} is full ({at} records)", device.display()));
            }
            match vol
                .read_slot(at)
                .map_err(|e| format!("read of sector {at} failed: {e}"))?
            {
                None => break,
                Some(Slot::Record(other)) => seq = other.seq + 1,
                Some(Slot::Bad(_)) => {}
            }
            at += 1;
        }
        let r = Record {
            seq,
            mono_ns: mono_ns(),
            node: node.clone(),
        };
        vol.write_record(at, &r)
            .map_err(|e| format!("write of record {seq} at sector {at} failed: {e}"))?;
        at += 1;
        seq += 1;
        std::thread::sleep(interval);
    }
}

fn beat(to: String, node: String, interval: Duration) -> Result<(), String> {
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("cannot bind UDP: {e}"))?;
    for seq in 0u64.. {
        // Errors (EPERM from a firewall drop, unreachable network) are the partition the
        // drill makes; the agent keeps going as a real one would.
        let _ = sock.send_to(heartbeat(&node, seq).as_bytes(), to.as_str());
        std::thread::sleep(interval);
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            drivers::errln!("palisade-workload: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let r = match (args.verb.as_str(), args.device, args.to) {
        ("write", Some(d), _) => write(d, args.node, args.interval),
        ("heartbeat", _, Some(to)) => beat(to, args.node, args.interval),
        _ => Err(format!("`{}` needs its options\n{USAGE}", args.verb)),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            drivers::errln!("palisade-workload: {e}");
            ExitCode::FAILURE
        }
    }
}
