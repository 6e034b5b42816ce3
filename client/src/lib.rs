//! The Convoke Rust client: one async method per call of the group API, an ordered event
//! stream, and shared-file transfers with progress and cancellation.
//!
//! ```no_run
//! # async fn demo() -> Result<(), convoke_client::ClientError> {
//! use convoke_client::{Client, CreateGroupData};
//! use futures::StreamExt;
//!
//! let client = Client::builder()
//!     .server("127.0.0.1:7447")
//!     .token("<token from `convoke token --user alice`>")
//!     .ca_file("data/cert.pem")
//!     .connect()
//!     .await?;
//! let mut events = client.events();
//! let group_id = client
//!     .create_group(CreateGroupData {
//!         groupname: "game night".into(),
//!         members: vec!["bob".into()],
//!         ..CreateGroupData::default()
//!     })
//!     .await?;
//! client.send_group_message(&group_id, "hello", false).await?;
//! while let Some(push) = events.next().await {
//!     println!("{push:?}");
//! }
//! # Ok(()) }
//! ```
//!
//! Shape (like async-nats): [`Client`] is a cheap `Clone` handle; one connection owns a QUIC
//! control stream on which requests are pipelined (many in flight, answered in any order),
//! and a task reads the broker's push stream into a bounded channel ([`EventStream`]).
//! When the connection ends, every pending and later call returns [`ClientError::Closed`]
//! and the event stream ends. The connection is closed when the last handle is dropped.
//!
//! Modules: [`builder`] (options and the handshake), [`client`] (the handle and raw
//! requests), [`api`] (the typed methods), [`events`], [`transfer`] (shared files),
//! [`error`], [`tls`] (trust: CA file or pinned fingerprint). `connection` holds the
//! background tasks.

pub mod api;
pub mod builder;
pub mod client;
mod connection;
pub mod error;
pub mod events;
pub mod tls;
pub mod transfer;

pub use api::{Invited, MessageSent, ReadUsers};
pub use builder::ClientBuilder;
pub use client::Client;
pub use error::ClientError;
pub use events::EventStream;
pub use tls::fingerprint_sha256;
pub use transfer::{
    progress_channel, CancelHandle, DownloadDest, Progress, ProgressFn, Transfer, UploadSource,
};

/// The wire contract, re-exported so that users need only this crate.
pub use convoke_protocol as protocol;
pub use convoke_protocol::response::ReadUser;
pub use convoke_protocol::{
    ApiError, CreateGroupData, ErrorCode, EventDetail, GroupEvent, GroupEventOp, GroupInfo,
    GroupInfoEntry, GroupMessage, JoinedGroup, MemberEntry, MuteEntry, PublicGroup, Push, Request,
    Response, Role, SharedFile, Welcome,
};
