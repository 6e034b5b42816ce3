//! Message history, the message-id index, read receipts and the per-group sequence
//! counter. History lives outside the group's own prefix so that loading a group actor
//! never reads its messages.

//!
//! Client message ids (idempotent sends) are a key space of their own beside the records,
//! whose encoding they leave unchanged: `c` maps (group, sender, client id) to the seq the
//! id stored, `k` maps the seq back, so that trimming a message also drops its id and the
//! ids stay bounded by history.

use super::{decode, decode_or_skip, keys, Result, Store, WriteSet};
use bincode::{Decode, Encode};

/// A stored group message.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MessageRec {
    pub seq: u64,
    pub msg_id: u64,
    pub from: String,
    pub payload: Vec<u8>,
    pub timestamp: i64,
    pub allow_group_ack: bool,
}

impl MessageRec {
    /// What the message counts for in a history page: its payload and sender, plus room
    /// for its ids, seq, timestamp and group id on the wire.
    pub fn page_bytes(&self) -> usize {
        self.payload.len() + self.from.len() + 64
    }

    /// The wire form.
    pub fn to_wire(&self, group_id: &str) -> convoke_protocol::GroupMessage {
        convoke_protocol::GroupMessage {
            group_id: group_id.to_string(),
            msg_id: self.msg_id.to_string(),
            seq: self.seq,
            from: self.from.clone(),
            payload: self.payload.clone(),
            timestamp: self.timestamp,
            allow_group_ack: self.allow_group_ack,
        }
    }
}

/// What [`Store::client_id_trim_writes`] released.
#[derive(Debug, Default)]
pub struct ClientIdTrim {
    /// The (sender, client id) pairs of the trimmed messages.
    pub released: Vec<(String, String)>,
    /// The lowest seq past the trimmed ones that still has a client id record.
    pub next_seq: Option<u64>,
}

impl Store {
    /// The group's next sequence number and its oldest retained one. The next is never at
    /// or below a seq in history, even if the counter record is missing or unreadable, so a
    /// stored message is never overwritten.
    pub fn load_seq(&self, gid: u64) -> Result<(u64, u64)> {
        let key = keys::space_prefix(keys::SEQ, gid);
        let counter = match self.db.get(&key)? {
            Some(v) => decode_or_skip::<u64>(&key, &v)?.unwrap_or(1),
            None => 1,
        };
        let after_last = match self
            .db
            .scan_prefix(keys::space_prefix(keys::HISTORY, gid))
            .next_back()
        {
            Some(kv) => keys::trailing_u64(&kv?.0).map_or(1, |s| s.saturating_add(1)),
            None => 1,
        };
        let next = counter.max(after_last);
        let first = match self
            .db
            .scan_prefix(keys::space_prefix(keys::HISTORY, gid))
            .next()
        {
            Some(kv) => keys::trailing_u64(&kv?.0).unwrap_or(next),
            None => next,
        };
        Ok((next, first))
    }

    /// Adds a message (its record, id index and the advanced counter) to `ws`.
    pub fn message_writes(&self, ws: &mut WriteSet, gid: u64, rec: &MessageRec) {
        ws.put_record(keys::space_key(keys::HISTORY, gid, rec.seq), rec);
        ws.put_record(keys::space_key(keys::MSG_INDEX, gid, rec.msg_id), &rec.seq);
        ws.put_record(keys::space_prefix(keys::SEQ, gid), &(rec.seq + 1));
    }

    /// Adds to `ws` the removal of messages with seq in `from..to` (and their receipts).
    pub fn trim_writes(&self, ws: &mut WriteSet, gid: u64, from: u64, to: u64) -> Result<()> {
        let start = keys::space_key(keys::HISTORY, gid, from);
        let end = keys::space_key(keys::HISTORY, gid, to);
        for kv in self.db.range(start..end) {
            let (k, v) = kv?;
            ws.delete(k.to_vec());
            // An unreadable record goes too; its id index entry (unknown) stays behind and
            // leads nowhere.
            let Some(rec) = decode_or_skip::<MessageRec>(&k, &v)? else {
                continue;
            };
            ws.delete(keys::space_key(keys::MSG_INDEX, gid, rec.msg_id));
            for r in self
                .db
                .scan_prefix(keys::space_key(keys::RECEIPT, gid, rec.msg_id))
            {
                ws.delete(r?.0.to_vec());
            }
        }
        Ok(())
    }

    /// The first retained seq whose message is at or after `min_ts`, scanning from `first`.
    pub fn first_seq_not_older_than(
        &self,
        gid: u64,
        first: u64,
        next: u64,
        min_ts: i64,
    ) -> Result<u64> {
        let start = keys::space_key(keys::HISTORY, gid, first);
        let end = keys::space_key(keys::HISTORY, gid, next);
        for kv in self.db.range(start..end) {
            let (k, v) = kv?;
            let Some(rec) = decode_or_skip::<MessageRec>(&k, &v)? else {
                continue;
            };
            if rec.timestamp >= min_ts {
                return Ok(rec.seq);
            }
        }
        Ok(next)
    }

    /// History in ascending seq: after `after` (oldest first), before `before` (the newest
    /// `limit` below it), or the newest `limit` when neither is given. At most `max_bytes`
    /// of messages ([`MessageRec::page_bytes`]), but always at least one: a page cut short
    /// keeps the messages nearest its cursor (the oldest after `after`, the newest below
    /// `before`), so the caller goes on from the last (or first) seq it got.
    pub fn history(
        &self,
        gid: u64,
        before: Option<u64>,
        after: Option<u64>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<MessageRec>> {
        let prefix = keys::space_prefix(keys::HISTORY, gid);
        let mut out: Vec<MessageRec> = Vec::with_capacity(limit.min(128));
        let mut bytes = 0usize;
        // Whether `rec` still fits in the page.
        let mut fits = |rec: &MessageRec, taken: usize| {
            bytes = bytes.saturating_add(rec.page_bytes());
            taken == 0 || bytes <= max_bytes
        };
        if let Some(after) = after {
            let start = keys::space_key(keys::HISTORY, gid, after.saturating_add(1));
            for kv in self.db.range(start..) {
                let (k, v) = kv?;
                if !k.starts_with(&prefix) || out.len() >= limit {
                    break;
                }
                let Some(rec) = decode_or_skip::<MessageRec>(&k, &v)? else {
                    continue;
                };
                if !fits(&rec, out.len()) {
                    break;
                }
                out.push(rec);
            }
            return Ok(out);
        }
        let end = keys::space_key(keys::HISTORY, gid, before.unwrap_or(u64::MAX));
        for kv in self.db.range(prefix.clone()..end).rev() {
            let (k, v) = kv?;
            if out.len() >= limit {
                break;
            }
            let Some(rec) = decode_or_skip::<MessageRec>(&k, &v)? else {
                continue;
            };
            if !fits(&rec, out.len()) {
                break;
            }
            out.push(rec);
        }
        out.reverse();
        Ok(out)
    }

    /// A message by its id.
    pub fn message_by_id(&self, gid: u64, msg_id: u64) -> Result<Option<MessageRec>> {
        let key = keys::space_key(keys::MSG_INDEX, gid, msg_id);
        let Some(v) = self.db.get(&key)? else {
            return Ok(None);
        };
        let seq: u64 = decode(&key, &v)?;
        let key = keys::space_key(keys::HISTORY, gid, seq);
        self.db.get(&key)?.map(|v| decode(&key, &v)).transpose()
    }

    /// Whether `user` already acknowledged `msg_id`.
    pub fn has_receipt(&self, gid: u64, msg_id: u64, user: &str) -> Result<bool> {
        Ok(self.db.contains_key(keys::receipt_key(gid, msg_id, user))?)
    }

    /// Adds a read receipt to `ws`.
    pub fn receipt_writes(&self, ws: &mut WriteSet, gid: u64, msg_id: u64, user: &str, at: i64) {
        ws.put_record(keys::receipt_key(gid, msg_id, user), &at);
    }

    /// Readers of `msg_id`: the total, and up to `limit` after the user id `cursor`.
    pub fn receipts(
        &self,
        gid: u64,
        msg_id: u64,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(u32, Vec<(String, i64)>)> {
        let prefix = keys::space_key(keys::RECEIPT, gid, msg_id);
        let mut total = 0u32;
        let mut page = Vec::new();
        for kv in self.db.scan_prefix(&prefix) {
            let (k, v) = kv?;
            total += 1;
            let user = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if cursor.is_some_and(|c| user.as_str() <= c) || page.len() >= limit {
                continue;
            }
            page.push((user, decode::<i64>(&k, &v)?));
        }
        Ok((total, page))
    }

    /// Adds to `ws` that `sender`'s client message id `client_id` stored message `seq`.
    pub fn client_id_writes(
        &self,
        ws: &mut WriteSet,
        gid: u64,
        seq: u64,
        sender: &str,
        client_id: &str,
    ) {
        ws.put_record(keys::client_id_key(gid, sender, client_id), &seq);
        ws.put_record(
            keys::space_key(keys::CLIENT_ID_BY_SEQ, gid, seq),
            &(sender, client_id),
        );
    }

    /// Adds to `ws` the removal of message `seq`'s client id record; the id itself is
    /// released too when `owns_id` (no later message took it over).
    pub fn client_id_release_writes(
        &self,
        ws: &mut WriteSet,
        gid: u64,
        seq: u64,
        sender: &str,
        client_id: &str,
        owns_id: bool,
    ) {
        ws.delete(keys::space_key(keys::CLIENT_ID_BY_SEQ, gid, seq));
        if owns_id {
            ws.delete(keys::client_id_key(gid, sender, client_id));
        }
    }

    /// The message that `sender`'s client message id `client_id` stored, if it is still in
    /// history.
    pub fn message_by_client_id(
        &self,
        gid: u64,
        sender: &str,
        client_id: &str,
    ) -> Result<Option<MessageRec>> {
        let key = keys::client_id_key(gid, sender, client_id);
        let Some(v) = self.db.get(&key)? else {
            return Ok(None);
        };
        let seq: u64 = decode(&key, &v)?;
        let key = keys::space_key(keys::HISTORY, gid, seq);
        let rec: Option<MessageRec> = self.db.get(&key)?.map(|v| decode(&key, &v)).transpose()?;
        Ok(rec.filter(|r| r.from == sender))
    }

    /// The lowest seq at or after `from` that has a client message id record.
    pub fn first_client_id_seq(&self, gid: u64, from: u64) -> Result<Option<u64>> {
        let prefix = keys::space_prefix(keys::CLIENT_ID_BY_SEQ, gid);
        let start = keys::space_key(keys::CLIENT_ID_BY_SEQ, gid, from);
        match self.db.range(start..).next() {
            Some(kv) => {
                let (k, _) = kv?;
                Ok(k.starts_with(&prefix)
                    .then(|| keys::trailing_u64(&k))
                    .flatten())
            }
            None => Ok(None),
        }
    }

    /// Adds to `ws` the removal of the client id records of messages `from..to` (the
    /// history being trimmed), and of each id unless a later message took it over.
    pub fn client_id_trim_writes(
        &self,
        ws: &mut WriteSet,
        gid: u64,
        from: u64,
        to: u64,
    ) -> Result<ClientIdTrim> {
        let prefix = keys::space_prefix(keys::CLIENT_ID_BY_SEQ, gid);
        let start = keys::space_key(keys::CLIENT_ID_BY_SEQ, gid, from);
        let mut released = Vec::new();
        for kv in self.db.range(start..) {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            let Some(seq) = keys::trailing_u64(&k) else {
                continue;
            };
            if seq >= to {
                return Ok(ClientIdTrim {
                    released,
                    next_seq: Some(seq),
                });
            }
            let (sender, client_id): (String, String) = decode(&k, &v)?;
            let id_key = keys::client_id_key(gid, &sender, &client_id);
            let owns_id = match self.db.get(&id_key)? {
                Some(v) => decode::<u64>(&id_key, &v)? == seq,
                None => false,
            };
            self.client_id_release_writes(ws, gid, seq, &sender, &client_id, owns_id);
            released.push((sender, client_id));
        }
        Ok(ClientIdTrim {
            released,
            next_seq: None,
        })
    }

    /// Adds to `ws` the deletion of a group's history, index, receipts, client message ids
    /// and counter.
    pub fn history_destroy_writes(&self, ws: &mut WriteSet, gid: u64) -> Result<()> {
        for tag in [
            keys::HISTORY,
            keys::MSG_INDEX,
            keys::RECEIPT,
            keys::CLIENT_ID,
            keys::CLIENT_ID_BY_SEQ,
            keys::SEQ,
        ] {
            for kv in self.db.scan_prefix(keys::space_prefix(tag, gid)) {
                ws.delete(kv?.0.to_vec());
            }
        }
        Ok(())
    }
}
