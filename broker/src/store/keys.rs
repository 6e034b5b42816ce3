//! The key layout of the one sled tree the broker uses.
//!
//! Every key starts with a one-byte space tag. A group's records share the prefix
//! `g <id:8 BE>`, so they are contiguous: loading a group is one prefix scan, destroying it
//! one range delete. User ids never contain a 0x00 byte (ids are `[A-Za-z0-9_.@-]`), so 0x00
//! separates a user id from what follows it.

/// Group records: `g <gid> <kind> [user]`.
pub const GROUP: u8 = b'g';
/// User records: `u <user>` -> first login time.
pub const USER: u8 = b'u';
/// Joined-groups index: `j <user> 0 <gid>` -> ().
pub const JOINED: u8 = b'j';
/// Public-group index: `p <gid>` -> group name.
pub const PUBLIC: u8 = b'p';
/// Kept events: `i <user> 0 <id>` -> the encoded `Push::Kept` frame of event `id`, until a
/// client of the user acknowledges it.
pub const INBOX: u8 = b'i';
/// Kept events by group: `e <user> 0 <gid:8> <id:8>` -> the event's operator (see
/// `store::kept`).
pub const KEPT_BY_GROUP: u8 = b'e';
/// Kept events by operator: `f <user> 0 <operator> 0 <id:8>` -> the gid (see `store::kept`).
pub const KEPT_BY_SENDER: u8 = b'f';
/// Groups with timed mutes, re-armed at start: `t <gid>` -> the earliest expiry (ms since
/// the epoch, an i64 record; empty in stores written before it was kept).
pub const TIMED: u8 = b't';

/// Kinds of group record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Meta = 0,
    Member = 1,
    Mute = 2,
    Allow = 3,
    Block = 4,
    Invite = 5,
    Request = 6,
    /// A shared file's index entry: `g <gid> 7 <file id:8 BE>`.
    File = 7,
}

impl Kind {
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Meta,
            1 => Self::Member,
            2 => Self::Mute,
            3 => Self::Allow,
            4 => Self::Block,
            5 => Self::Invite,
            6 => Self::Request,
            7 => Self::File,
            _ => return None,
        })
    }
}

pub fn group_prefix(gid: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(GROUP);
    k.extend_from_slice(&gid.to_be_bytes());
    k
}

pub fn group_key(gid: u64, kind: Kind, user: &str) -> Vec<u8> {
    let mut k = group_prefix(gid);
    k.push(kind as u8);
    k.extend_from_slice(user.as_bytes());
    k
}

pub fn file_key(gid: u64, file_id: u64) -> Vec<u8> {
    let mut k = group_prefix(gid);
    k.push(Kind::File as u8);
    k.extend_from_slice(&file_id.to_be_bytes());
    k
}

pub fn user_key(user: &str) -> Vec<u8> {
    let mut k = vec![USER];
    k.extend_from_slice(user.as_bytes());
    k
}

pub fn joined_prefix(user: &str) -> Vec<u8> {
    let mut k = vec![JOINED];
    k.extend_from_slice(user.as_bytes());
    k.push(0);
    k
}

pub fn joined_key(user: &str, gid: u64) -> Vec<u8> {
    let mut k = joined_prefix(user);
    k.extend_from_slice(&gid.to_be_bytes());
    k
}

pub fn public_key(gid: u64) -> Vec<u8> {
    let mut k = vec![PUBLIC];
    k.extend_from_slice(&gid.to_be_bytes());
    k
}

pub fn inbox_prefix(user: &str) -> Vec<u8> {
    let mut k = vec![INBOX];
    k.extend_from_slice(user.as_bytes());
    k.push(0);
    k
}

pub fn inbox_key(user: &str, seq: u64) -> Vec<u8> {
    let mut k = inbox_prefix(user);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub fn timed_key(gid: u64) -> Vec<u8> {
    let mut k = vec![TIMED];
    k.extend_from_slice(&gid.to_be_bytes());
    k
}

/// `key` for a log line: printable bytes as they are, others as `\xNN`, at most 96 bytes.
pub fn describe(key: &[u8]) -> String {
    let mut out = String::new();
    for &b in key.iter().take(96) {
        if b.is_ascii_graphic() {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if key.len() > 96 {
        out.push_str("...");
    }
    out
}

/// The big-endian u64 at the end of `key`, if it is long enough.
pub fn trailing_u64(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// Message history: `h <gid> <seq>` -> a message record.
pub const HISTORY: u8 = b'h';
/// Message id index: `x <gid> <msg id>` -> seq.
pub const MSG_INDEX: u8 = b'x';
/// Read receipts: `r <gid> <msg id> <user>` -> read time.
pub const RECEIPT: u8 = b'r';
/// A group's next message sequence number: `s <gid>` -> u64.
pub const SEQ: u8 = b's';
/// Client message ids of idempotent sends: `c <gid> <sender> 0 <client id>` -> the seq of
/// the message that id stored. The sender's id never contains 0x00; the client id is the
/// rest of the key.
pub const CLIENT_ID: u8 = b'c';
/// The reverse of [`CLIENT_ID`], so that trimming a message finds its client id:
/// `k <gid> <seq>` -> (sender, client id).
pub const CLIENT_ID_BY_SEQ: u8 = b'k';

/// `tag <gid>`: the prefix of one group's records in a per-group space.
pub fn space_prefix(tag: u8, gid: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(tag);
    k.extend_from_slice(&gid.to_be_bytes());
    k
}

/// `tag <gid> <n>`.
pub fn space_key(tag: u8, gid: u64, n: u64) -> Vec<u8> {
    let mut k = space_prefix(tag, gid);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// `r <gid> <msg id> <user>`.
pub fn receipt_key(gid: u64, msg_id: u64, user: &str) -> Vec<u8> {
    let mut k = space_key(RECEIPT, gid, msg_id);
    k.extend_from_slice(user.as_bytes());
    k
}

/// `c <gid> <sender> 0 <client id>`.
pub fn client_id_key(gid: u64, sender: &str, client_id: &str) -> Vec<u8> {
    let mut k = space_prefix(CLIENT_ID, gid);
    k.extend_from_slice(sender.as_bytes());
    k.push(0);
    k.extend_from_slice(client_id.as_bytes());
    k
}
