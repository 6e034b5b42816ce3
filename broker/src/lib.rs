//! The Convoke broker: a realtime group-chat broker over QUIC.
//!
//! A request travels: [`server`] accepts the QUIC connection -> [`session`] runs the
//! handshake and reads request frames, routing each to its group through [`ingress`] (the
//! one way into a group, as plain-data [`group::GroupCall`]s) -> the group actor applies
//! [`group::rules`], persists through [`store`], answers, and fans events out through
//! [`fanout`] (through [`presence`]) into each member session's event stream ([`outbox`]).
//! ARCHITECTURE.md at the repository root traces this with file names.

pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod fanout;
pub mod files;
pub mod group;
pub mod ingress;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod presence;
pub mod quota;
pub mod server;
pub mod session;
pub mod store;
pub mod tls;
pub mod webtransport;

pub use config::Config;
pub use server::{start, RunningBroker};
