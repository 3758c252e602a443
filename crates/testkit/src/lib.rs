//! The bootvault test kit: what the demo, the tests and the benches share, kept out of the
//! library so that no host links a web server. [`origin`] is a real HTTP/1.1 server on loopback
//! with fault injection (ranges, validators, truncated bodies, stalls, throttling); [`demo`]
//! builds the deterministic demo set shaped like arcbox's boot assets; [`registry`] runs a real
//! `docker-registry` (anonymous, htpasswd Basic, or a Bearer token server) on loopback; [`proxy`]
//! is a TCP proxy that counts, cuts and throttles what a server sends. All of them start, serve
//! and stop through one helper (`serve`).

pub mod arcbox_set;
pub mod demo;
pub mod origin;
pub mod proxy;
pub mod registry;
mod serve;
