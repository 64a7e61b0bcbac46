//! Parsing both paths need: path normalisation (the config's prefixes
//! and the request path are normalised alike) and cookie parsing (split
//! rules, sticky keys and router plugins read cookies alike).

pub mod cookie;
pub mod path;
