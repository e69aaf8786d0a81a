//! The CPG message encoding: a version byte, then the message as JSON. JSON because members
//! are few and messages rare (one claim, a few progress notes and an outcome per fence); the
//! version byte lets a later encoding be told apart from this one.

use super::state::Message;

/// The encoding's version byte.
const VERSION: u8 = 1;

/// Why a CPG payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// An empty payload.
    #[error("empty cluster message; a member of another version or another program shares the CPG group: give Palisade its own group (`[cluster] group`)")]
    Empty,
    /// Another version.
    #[error("cluster message version {0}, this fenced reads version {VERSION}; run the same Palisade version on every member")]
    Version(u8),
    /// A message could not be encoded (a bug: every message type must serialise).
    #[error("cannot encode a cluster message: {0}; this is a bug in fenced, please report it")]
    Encode(String),
    /// Not a message of this version.
    #[error("malformed cluster message: {0}; run the same Palisade version on every member")]
    Malformed(String),
}

/// Encodes a message for `cpg_mcast_joined`.
pub fn encode(m: &Message) -> Result<Vec<u8>, WireError> {
    let mut out = vec![VERSION];
    // A half-written message would reach every member as garbage: fail it here instead.
    serde_json::to_writer(&mut out, m).map_err(|e| WireError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes a delivered payload.
pub fn decode(b: &[u8]) -> Result<Message, WireError> {
    match b.split_first() {
        None => Err(WireError::Empty),
        Some((&VERSION, rest)) => {
            serde_json::from_slice(rest).map_err(|e| WireError::Malformed(e.to_string()))
        }
        Some((v, _)) => Err(WireError::Version(*v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::state::{Claim, MemberId, OpKey};
    use crate::model::Action;

    #[test]
    fn round_trip_and_refusals() {
        let m = Message::Claim(Claim {
            origin_op: 7,
            target: "n1".into(),
            action: Action::Off,
            request_id: Some("r".into()),
            levels: vec![vec!["bmc".into()]],
            reason: "why".into(),
        });
        assert_eq!(decode(&encode(&m).unwrap()).unwrap(), m);
        let s = Message::Started {
            op: OpKey {
                origin: MemberId { node: 1, pid: 2 },
                origin_op: 3,
            },
            local_id: 9,
        };
        assert_eq!(decode(&encode(&s).unwrap()).unwrap(), s);
        // A snapshot: maps keyed by members and operations survive (JSON keys are strings).
        let a = MemberId { node: 1, pid: 2 };
        let mut st = crate::cluster::state::ClusterState::default();
        st.apply(&crate::cluster::state::Delivered::Membership {
            members: vec![a],
            joined: vec![a],
        });
        st.apply(&crate::cluster::state::Delivered::Message {
            from: a,
            msg: Message::Quorum { quorate: true },
        });
        let sync = Message::Sync {
            for_members: vec![MemberId { node: 2, pid: 3 }],
            snapshot: Box::new(st),
        };
        assert_eq!(decode(&encode(&sync).unwrap()).unwrap(), sync);
        assert!(matches!(decode(&[]), Err(WireError::Empty)));
        assert!(matches!(decode(&[2, b'{']), Err(WireError::Version(2))));
        assert!(matches!(decode(&[1, b'{']), Err(WireError::Malformed(_))));
    }
}
