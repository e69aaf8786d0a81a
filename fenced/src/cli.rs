//! The command lines of the fencer's binaries (`fenced`, `fence_node`, `fence_palisade`). They
//! live in the library, not in the binaries, so that the man pages and shell completions the
//! Debian packages ship are generated from the definitions the binaries parse with
//! (`packaging/src/bin/palisade-docs.rs`), never from a second hand-written copy.

pub mod fence_node;
pub mod fence_palisade;
pub mod fenced;
