//! Facts from outside the group that some rules need, prefetched.
//!
//! A few rules ask about users beyond the group: does this user exist (has logged in at
//! least once: invite, add, admin and owner targets, 204 otherwise) and how many groups has
//! it joined (`max_groups_per_user`, 50). Those answers live outside the group (in a
//! cluster, on other nodes), so the rule never reads them itself: the ingress gathers them
//! for the users a request names ([`named_by_request`], [`named_by_create`]) before the
//! request reaches the group's actor, and the rule reads them from `Ctx::facts`. The
//! actor never waits on another node, and `Facts` is plain data a forwarded call carries.
//!
//! Gathered before the request is queued, a fact can be older than the group's state by
//! the requests queued ahead of it; that is the same race the rule always had with other
//! groups' actors (a user's joins in two groups at once), never one within this group,
//! whose own roster the rule reads directly.
//!
//! In a cluster the facts are gathered from every node, and a node that is Down or does
//! not answer in time leaves its part out. The facts then say so ([`Facts::missed`]): a
//! user not found on the nodes that answered answers 500 SERVER_BUSY naming the missing
//! node, retryable, never a definite 204. A joined count without a missing node's part is
//! used as it is: `max_groups_per_user` is soft while a node is unreachable, so that joins
//! and creates of groups owned elsewhere keep working. On a single node the facts are
//! always complete.

use super::Caller;
use bincode::{Decode, Encode};
use convoke_protocol::{CreateGroupData, Request};
use std::collections::BTreeMap;

/// What is known about one user, outside any group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Encode, Decode)]
pub struct UserFacts {
    /// The user has logged in at least once.
    pub exists: bool,
    /// Groups the user is a member of, other than the one the request is for (a rule that
    /// checks the quota has checked that the user is not a member of its group).
    pub joined: u64,
}

/// The outside facts of one request, per user it names. Empty for most requests (no
/// allocation: messages carry an empty one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct Facts {
    users: BTreeMap<String, UserFacts>,
    /// Nodes whose part is missing (empty: the facts are complete).
    missing: Vec<Missing>,
}

/// A node whose part of the facts is missing: it was Down or did not answer in time.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Missing {
    pub node: String,
    /// A core node, which holds groups (and so joined counts); a gateway holds only
    /// first-login records.
    pub holds_groups: bool,
}

impl Facts {
    /// Gathers the facts of `users` with `lookup` (duplicates looked up once).
    pub fn gather<'a>(
        users: impl IntoIterator<Item = &'a str>,
        mut lookup: impl FnMut(&str) -> UserFacts,
    ) -> Self {
        let mut facts = Self::default();
        for u in users {
            if !facts.users.contains_key(u) {
                let f = lookup(u);
                facts.users.insert(u.to_string(), f);
            }
        }
        facts
    }

    /// Records the facts of `user`.
    pub fn insert(&mut self, user: &str, facts: UserFacts) {
        self.users.insert(user.to_string(), facts);
    }

    /// Whether `user` has logged in at least once (false for a user not gathered).
    pub fn user_exists(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|f| f.exists)
    }

    /// How many groups `user` is a member of (0 for a user not gathered).
    pub fn joined_count(&self, user: &str) -> usize {
        self.users
            .get(user)
            .map_or(0, |f| usize::try_from(f.joined).unwrap_or(usize::MAX))
    }

    /// Whether nothing was gathered.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.missing.is_empty()
    }

    /// Records that `node`'s part is missing.
    pub fn missed(&mut self, node: &str, holds_groups: bool) {
        self.missing.push(Missing {
            node: node.to_string(),
            holds_groups,
        });
    }

    /// The nodes (comma-separated) that may hold a first-login record the facts do not
    /// include: `None` when whether a user exists is known.
    pub fn unsure_exists(&self) -> Option<String> {
        names(self.missing.iter())
    }

    /// The nodes (comma-separated) that may hold joined groups the counts leave out:
    /// `None` when the counts are complete.
    pub fn unsure_joined(&self) -> Option<String> {
        names(self.missing.iter().filter(|m| m.holds_groups))
    }
}

fn names<'a>(missing: impl Iterator<Item = &'a Missing>) -> Option<String> {
    let names: Vec<&str> = missing.map(|m| m.node.as_str()).collect();
    (!names.is_empty()).then(|| names.join(", "))
}

/// The users whose facts the rule of `request` (from `caller`) may read: empty for every
/// request that names no user the rules check outside the group.
pub fn named_by_request<'a>(caller: &'a Caller, request: &'a Request) -> Vec<&'a str> {
    use Request as R;
    match request {
        R::ChangeGroupOwner { new_owner: u, .. }
        | R::SetGroupAdmin { username: u, .. }
        | R::RemoveGroupAdmin { username: u, .. }
        | R::AcceptGroupInvite { invitee: u, .. }
        | R::AcceptGroupJoinRequest { applicant: u, .. } => vec![u.as_str()],
        R::InviteUsersToGroup { users, .. } => users.iter().map(String::as_str).collect(),
        R::JoinGroup { .. } => vec![caller.user.as_str()],
        _ => Vec::new(),
    }
}

/// The users whose facts createGroup's rule may read: the initial members and the creator.
pub fn named_by_create<'a>(caller: &'a Caller, data: &'a CreateGroupData) -> Vec<&'a str> {
    data.members
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(caller.user.as_str()))
        .collect()
}
