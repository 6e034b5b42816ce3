//! Message history, the message-id index, read receipts and the per-group sequence
//! counter. History lives outside the group's own prefix so that loading a group actor
//! never reads its messages.

use super::{decode, encode, keys, Result, Store, WriteSet};
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

impl Store {
    /// The group's next sequence number and its oldest retained one.
    pub fn load_seq(&self, gid: u64) -> Result<(u64, u64)> {
        let key = keys::space_prefix(keys::SEQ, gid);
        let next = match self.db.get(&key)? {
            Some(v) => decode::<u64>(&key, &v)?,
            None => 1,
        };
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
        ws.put(keys::space_key(keys::HISTORY, gid, rec.seq), encode(rec));
        ws.put(
            keys::space_key(keys::MSG_INDEX, gid, rec.msg_id),
            encode(&rec.seq),
        );
        ws.put(keys::space_prefix(keys::SEQ, gid), encode(&(rec.seq + 1)));
    }

    /// Adds to `ws` the removal of messages with seq in `from..to` (and their receipts).
    pub fn trim_writes(&self, ws: &mut WriteSet, gid: u64, from: u64, to: u64) -> Result<()> {
        let start = keys::space_key(keys::HISTORY, gid, from);
        let end = keys::space_key(keys::HISTORY, gid, to);
        for kv in self.db.range(start..end) {
            let (k, v) = kv?;
            let rec: MessageRec = decode(&k, &v)?;
            ws.delete(k.to_vec());
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
            let rec: MessageRec = decode(&k, &v)?;
            if rec.timestamp >= min_ts {
                return Ok(rec.seq);
            }
        }
        Ok(next)
    }

    /// History in ascending seq: after `after` (oldest first), before `before` (the newest
    /// `limit` below it), or the newest `limit` when neither is given.
    pub fn history(
        &self,
        gid: u64,
        before: Option<u64>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<MessageRec>> {
        let prefix = keys::space_prefix(keys::HISTORY, gid);
        let mut out = Vec::with_capacity(limit);
        if let Some(after) = after {
            let start = keys::space_key(keys::HISTORY, gid, after.saturating_add(1));
            for kv in self.db.range(start..) {
                let (k, v) = kv?;
                if !k.starts_with(&prefix) || out.len() >= limit {
                    break;
                }
                out.push(decode(&k, &v)?);
            }
            return Ok(out);
        }
        let end = keys::space_key(keys::HISTORY, gid, before.unwrap_or(u64::MAX));
        for kv in self.db.range(prefix.clone()..end).rev() {
            let (k, v) = kv?;
            if out.len() >= limit {
                break;
            }
            out.push(decode(&k, &v)?);
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
        ws.put(keys::receipt_key(gid, msg_id, user), encode(&at));
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

    /// Adds to `ws` the deletion of a group's history, index, receipts and counter.
    pub fn history_destroy_writes(&self, ws: &mut WriteSet, gid: u64) -> Result<()> {
        for tag in [keys::HISTORY, keys::MSG_INDEX, keys::RECEIPT, keys::SEQ] {
            for kv in self.db.scan_prefix(keys::space_prefix(tag, gid)) {
                ws.delete(kv?.0.to_vec());
            }
        }
        Ok(())
    }
}
