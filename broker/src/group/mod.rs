//! Groups: one supervised actor per active group.
//!
//! - [`model`]: the group's records and in-memory shape.
//! - [`persist`]: the group's records in the store (load, writes), kept out of `store`.
//! - [`rules`]: what each request may do and causes, as plain Rust (tested without a runtime).
//! - [`dedup`]: idempotent sends: matching a send's client message id with an earlier one.
//! - [`call`]: what reaches a group ([`GroupCall`], answered by [`GroupAnswer`]), as plain
//!   data, and the one place that hands it to the actor.
//! - [`actor`]: the thin driver: apply a rule, persist, answer, fan out; mute-expiry timers.
//! - [`directory`]: the supervisor that spawns group actors on first use, restarts them after
//!   a panic, stops them when idle, and never lets two actors own one group.

pub mod actor;
pub mod call;
pub mod dedup;
pub mod directory;
pub mod files;
pub mod messages;
pub mod model;
pub mod persist;
pub mod rules;

pub use call::{Answer, Forwarded, GroupAnswer, GroupCall, PendingReply};
pub use directory::Groups;
