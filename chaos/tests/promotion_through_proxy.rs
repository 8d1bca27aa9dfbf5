//! A promotion must count each member once, however many addresses reach it. Found by the
//! chaos harness (`chaos --seed 1 --seconds 60 --nemesis stale-promotion`): the followers
//! reach their leader through the harness's proxies, so each knows the leader by two
//! addresses, the proxy's and the one the leader advertises. Once that leader was killed and
//! restarted in admin mode it answered a promotion's question without a name; the candidate
//! took the proxy's address for a second member, asked it to accept the new epoch after the
//! real address had, was refused ("epoch N is not newer than epoch N"), and every later
//! attempt failed the same way: no leader until a person re-pointed the old one.
//!
//! Runs the real `strata` binary (`STRATA_BIN`, or the workspace's debug build); skipped, with
//! a message, when there is none.

use std::time::Duration;

use strata_chaos::admin::role_body;
use strata_chaos::cluster::{Cluster, ClusterSettings, PROMOTION_TIMEOUT, ROLE_TIMEOUT};
use strata_chaos::run;

fn set_role(cluster: &Cluster, index: usize, body: &str, timeout: Duration) {
    let reply = cluster.set_role(index, body, timeout).expect("the node answers");
    assert!(reply.ok(), "{body} on {}: {}", cluster.nodes[index].name, reply.text);
}

#[test]
fn a_leader_restarted_in_admin_mode_does_not_block_the_promotion_of_its_follower() {
    let binary = run::strata_binary();
    if !binary.is_file() {
        eprintln!("skipped: no strata binary at {binary:?} (build it or set STRATA_BIN)");
        return;
    }
    let out_dir =
        std::env::temp_dir().join(format!("strata-proxy-promotion-{}", std::process::id()));
    let mut settings = ClusterSettings::new(binary, out_dir.clone());
    settings.learners = 0;
    let mut cluster = Cluster::start(settings).expect("the nodes start");
    set_role(&cluster, 0, &role_body("leader", Some("n1"), None), PROMOTION_TIMEOUT);
    for index in 1..3 {
        let name = cluster.nodes[index].name.clone();
        let address = cluster.leader_address(index, 0);
        assert_ne!(address, cluster.nodes[0].peer_address(), "the follower goes through a proxy");
        let body = role_body("follower", Some(&name), Some(&address));
        set_role(&cluster, index, &body, ROLE_TIMEOUT);
    }
    cluster.kill(0);
    cluster.restart(0).expect("the old leader restarts, in admin mode");
    let reply = cluster
        .set_role(1, &role_body("leader", Some("n2"), None), PROMOTION_TIMEOUT)
        .expect("the candidate answers");
    assert!(reply.ok(), "the promotion failed: {}", reply.text);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&out_dir);
}
