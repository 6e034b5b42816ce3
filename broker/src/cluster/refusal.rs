//! When peers' refusals stop this node (review finding M6): a process refused by the
//! cluster must not keep serving as the node it claims to be (accepting clients, placing
//! groups on that node's shards, minting ids with its ordinal), but a peer cannot be
//! trusted blindly either: a misconfigured or hostile peer's refusal must not shut down a
//! healthy node.
//!
//! A refusal counts only when it comes from a core member of this node's member list (not
//! a gateway, not a node claiming this node's own name) and names a fatal reason (the
//! node's identity or a setting every node must share). Then this node stops (exit code 2)
//! when either
//! - a core peer says it remembers this node's name on another data dir (`node_uid`) or
//!   has another process of this name Up (`duplicate_name`), while no core peer has
//!   accepted this process yet: evidence about this node in particular, as the impostor
//!   starting on a copy of a config hears it; once accepted by the cluster, one peer's
//!   word is not enough; or
//! - a majority of the core members (this node counted as not refusing) refuse it, for
//!   any fatal reason: a setting that differs (app secret, shards, members, ordinal,
//!   cookie: a dialed connection closed after the member's challenge, before it
//!   authenticated, while no core member has accepted this process) is
//!   symmetric, each side refuses the other, and only a majority tells which side is
//!   wrong. In a cluster of two core members one refusal is never a majority: both log it.

/// The reasons (`convoke_cluster_refused_total{reason}`) that may stop a refused node.
pub(crate) const FATAL: [&str; 7] = [
    "node_uid",
    "duplicate_name",
    "ordinal",
    "members",
    "shards",
    "app_secret",
    // Not sent by a peer (a node whose cookie differs cannot talk to it): a connection
    // this node dialed to a core member closed before it authenticated.
    "cookie",
];

/// Reasons that are evidence about the refused process itself, not a disagreement.
const ABOUT_THIS_NODE: [&str; 2] = ["node_uid", "duplicate_name"];

/// A refusal this node heard and still stands: (peer, reason code, the peer's words).
pub(crate) type Heard<'a> = (&'a str, &'a str, &'a str);

/// Whether the refusals `heard` stop node `me`, given the core members `core` and whether a
/// core peer has accepted this process (`accepted`): the refusals that count, in the
/// peers' words, or `None` to keep running.
pub(crate) fn verdict(
    me: &str,
    core: &[String],
    heard: &[Heard<'_>],
    accepted: bool,
) -> Option<String> {
    let counted: Vec<&Heard<'_>> = heard
        .iter()
        .filter(|(peer, code, _)| {
            *peer != me && core.iter().any(|c| c == peer) && FATAL.contains(code)
        })
        .collect();
    let about_this_node = !accepted
        && counted
            .iter()
            .any(|(_, code, _)| ABOUT_THIS_NODE.contains(code));
    let majority = counted.len() * 2 > core.len();
    (about_this_node || majority).then(|| {
        counted
            .iter()
            .map(|(_, _, words)| *words)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    #[test]
    fn one_peers_disagreement_never_stops_a_node_a_majoritys_does() {
        let three = core(3);
        let secret = ("n3", "app_secret", "refused by n3: its app secret differs");
        // n3 misconfigured refuses n1: n1 keeps running, started or not.
        assert_eq!(verdict("n1", &three, &[secret], false), None);
        assert_eq!(verdict("n1", &three, &[secret], true), None);
        // n1 and n2 refuse n3: n3 is the odd one.
        let by_both = [
            ("n1", "app_secret", "refused by n1: a"),
            ("n2", "app_secret", "refused by n2: b"),
        ];
        let words = verdict("n3", &three, &by_both, true).unwrap();
        assert!(words.contains("refused by n1") && words.contains("refused by n2"));
        // Two core members: one refusal is never a majority.
        assert_eq!(
            verdict("n1", &core(2), &[("n2", "shards", "x")], false),
            None
        );
    }

    #[test]
    fn a_peer_that_remembers_this_name_on_another_data_dir_stops_a_process_not_yet_accepted() {
        let two = core(2);
        let uid = (
            "n1",
            "node_uid",
            "refused by n1: n2 runs on another data dir",
        );
        assert!(verdict("n2", &two, &[uid], false).is_some());
        let dup = ("n1", "duplicate_name", "refused by n1: n2 is up");
        assert!(verdict("n2", &two, &[dup], false).is_some());
        // Accepted by the cluster already: one peer's word is not enough.
        assert_eq!(verdict("n2", &two, &[uid], true), None);
        assert!(verdict("n2", &core(3), &[uid, ("n3", "node_uid", "y")], true).is_some());
    }

    #[test]
    fn refusals_that_do_not_count() {
        let three = core(3);
        // From a gateway, from a node claiming this node's name, for a reason that is not
        // fatal (another protocol version: a rolling upgrade).
        for heard in [
            ("g4", "node_uid", "x"),
            ("n2", "duplicate_name", "x"),
            ("n1", "proto", "x"),
        ] {
            assert_eq!(verdict("n2", &three, &[heard], false), None, "{heard:?}");
        }
        assert_eq!(
            verdict(
                "n2",
                &three,
                &[("n1", "proto", "x"), ("n3", "proto", "y")],
                false
            ),
            None
        );
    }
}
