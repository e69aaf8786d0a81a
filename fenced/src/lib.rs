//! Palisade's fencer: configuration, the fencing engine, durable history and the fencer API.

pub mod model;
