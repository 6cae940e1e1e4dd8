//! Failover as a client behind a load balancer meets it: exactly-once signing across retries,
//! bounded waits while the leader is dead, paused or cut off, readiness that tells the truth,
//! and supervised actors. Every test asserts what the callers saw.

use std::time::{Duration, Instant};

use stella_tests::drill::{
    Attempt, Callers, DEADLINE, SLACK, assert_honest_outcomes, assert_log_matches, by_request,
    options,
};
use stella_tests::{ClusterOptions, TestCluster};

#[test]
fn a_leader_killed_under_load_costs_honest_callers_nothing_but_a_retry() {
    let mut cluster = TestCluster::start(options(false, ""));
    let callers = Callers::start(&cluster, 6);
    callers.wait_acked(30, "before the kill");
    let leader = cluster.leader().expect("a leader");
    let killed = Instant::now();
    cluster.kill(leader);
    let survivors: Vec<usize> = (1..=3).filter(|id| *id != leader).collect();
    let recovery = callers.recovered(killed, &survivors);
    println!("leader {leader} killed; first signing after it per node: {recovery:?}");
    callers.wait_acked(30, "after the kill");
    let attempts = callers.finish();
    let retried = by_request(&attempts)
        .values()
        .filter(|tries| tries.len() > 1)
        .count();
    println!(
        "{} attempts, {} logical requests, {retried} retried",
        attempts.len(),
        by_request(&attempts).len()
    );
    let outcomes = assert_honest_outcomes(&attempts);
    cluster.restart(leader);
    cluster.wait_converged(Duration::from_secs(60));
    assert_log_matches(&mut cluster, &outcomes);
}

/// One Raft entry per signing (ADR 0028): leaders sign before the entry commits, so clients
/// racing for a plan's last units while the leader dies must still get exactly those units —
/// the new leader may pre-check against a state that has not applied the old leader's entries
/// yet, and `apply` must refuse what it over-promised.
#[test]
fn clients_racing_for_the_last_units_of_a_quota_through_a_leader_kill_get_exactly_them() {
    const QUOTA: u64 = 30;
    const LAST: u64 = 8;
    let mut cluster = TestCluster::start(ClusterOptions {
        signatures_per_window: QUOTA,
        ..options(false, "")
    });
    // Spend all but the last units.
    let mut spent = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while spent < QUOTA - LAST {
        assert!(Instant::now() < deadline, "could not spend the quota");
        match cluster.sign(1 + spent as usize % 3) {
            Ok((200, _)) => spent += 1,
            Ok((503, _)) | Err(_) => std::thread::sleep(Duration::from_millis(100)),
            Ok((status, body)) => panic!("spending the quota: {status} {body}"),
        }
    }
    let callers = Callers::start(&cluster, 12);
    callers.wait_acked(1, "the race began");
    let leader = cluster.leader().expect("a leader");
    cluster.kill(leader);
    callers.wait_acked_total(LAST as usize, "every last unit is granted to someone");
    // Keep racing well past the end of the quota: nothing more may be granted.
    callers.wait_attempts(60, "after the quota ran out");
    let attempts = callers.finish();
    let odd: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| !matches!(a.status, None | Some(200 | 429 | 503)))
        .collect();
    assert!(odd.is_empty(), "only grants, 429 and 503: {odd:#?}");
    let mut acked: std::collections::HashMap<&str, (&str, &str)> = Default::default();
    for a in attempts.iter().filter(|a| a.status == Some(200)) {
        let answer = (
            a.audit_id.as_deref().unwrap_or(""),
            a.bundle_sha256.as_deref().unwrap_or(""),
        );
        assert_eq!(
            *acked.entry(&a.request).or_insert(answer),
            answer,
            "{}: one outcome per request",
            a.request
        );
    }
    println!(
        "{} attempts; {} requests got the last {LAST} units; leader {leader} killed",
        attempts.len(),
        acked.len()
    );
    assert_eq!(
        acked.len() as u64,
        LAST,
        "the last units, no more, no fewer"
    );
    cluster.restart(leader);
    cluster.wait_converged(Duration::from_secs(60));
    for id in 1..=cluster.len() {
        cluster.stop(id);
    }
    let records = stella_tests::audit_records(&cluster.data_dir(1));
    stella_tests::audit_verify(&cluster.data_dir(1)).expect("the chain verifies");
    let signed: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["decision"] == "signed")
        .collect();
    assert_eq!(
        signed.len() as u64,
        QUOTA,
        "the plan granted exactly its quota"
    );
    for (request, (audit_id, bundle)) in &acked {
        let mine: Vec<_> = signed
            .iter()
            .filter(|r| r["requestId"] == *request)
            .collect();
        assert_eq!(mine.len(), 1, "{request} is signed exactly once");
        assert_eq!(mine[0]["auditId"], *audit_id);
        assert_eq!(mine[0]["bundleSha256"], *bundle);
    }
    for id in 2..=cluster.len() {
        assert_eq!(
            stella_tests::audit_records(&cluster.data_dir(id)),
            records,
            "node {id} holds the same audit chain"
        );
    }
}

#[test]
fn a_partitioned_or_paused_leader_bounds_every_wait_and_says_it_is_not_ready() {
    let mut cluster = TestCluster::start(options(true, ""));
    cluster.wait_converged(Duration::from_secs(60));
    for id in 1..=3 {
        cluster.wait_ready(id, Duration::from_secs(60));
    }
    let callers = Callers::start(&cluster, 4);

    // 1. The leader is cut off from its peers (clients still reach it).
    let old = cluster.leader().expect("a leader");
    let others: Vec<usize> = (1..=3).filter(|id| *id != old).collect();
    callers.target(&others);
    callers.wait_acked(10, "before the partition");
    let cut = Instant::now();
    let partition = cluster.partition(&[old], &others);
    // It stops saying "ready" once its lease lapses.
    let not_ready = loop {
        if let Some((503, failing)) = cluster.readiness(old) {
            assert!(
                failing
                    .iter()
                    .any(|f| f == "leader_lease" || f == "leader_known" || f == "leader_contact"),
                "{failing:?}"
            );
            break cut.elapsed();
        }
        assert!(
            cut.elapsed() < Duration::from_secs(30),
            "the isolated leader kept saying ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // A request that reaches it is answered 503 at once, with Retry-After — not held.
    let sent = Instant::now();
    let answer = cluster.sign(old).expect("the isolated node answers");
    let held = sent.elapsed();
    assert_eq!(answer.0, 503, "{answer:?}");
    assert!(
        held < Duration::from_secs(3),
        "the isolated leader held a request {held:?}"
    );
    let recovery = callers.recovered(cut, &others);
    println!(
        "partition: old leader {old} not ready after {not_ready:?}, answered in {held:?}; first signings after the cut {recovery:?}"
    );
    drop(partition);
    cluster.wait_converged(Duration::from_secs(60));

    // 2. The leader freezes for 5 s (SIGSTOP): requests to the others do not wait for it.
    let frozen = cluster.leader().expect("a leader");
    let others: Vec<usize> = (1..=3).filter(|id| *id != frozen).collect();
    callers.target(&others);
    callers.wait_acked(10, "before the pause");
    let paused = Instant::now();
    cluster.pause(frozen);
    let recovery = callers.recovered(paused, &others);
    let until = paused + Duration::from_secs(5);
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    cluster.resume(frozen);
    println!("pause: leader {frozen} frozen 5 s; first signings after it {recovery:?}");
    // Thawed, it learns the new term and is ready again once caught up.
    cluster.wait_ready(frozen, Duration::from_secs(60));
    callers.target(&[1, 2, 3]);
    callers.wait_acked(10, "after the pause");
    let attempts = callers.finish();

    // No caller waited past the deadline for an answer from a node that was running.
    let slow: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.took > DEADLINE + SLACK)
        .collect();
    assert!(
        slow.is_empty(),
        "requests waited past their deadline: {slow:#?}"
    );
    let unavailable = attempts.iter().filter(|a| a.status == Some(503)).count();
    println!(
        "{} attempts, {unavailable} answered 503 and retried",
        attempts.len()
    );
    assert!(
        attempts
            .iter()
            .all(|a| a.code.as_deref() != Some("invalid_token"))
    );
    let outcomes = assert_honest_outcomes(&attempts);
    cluster.wait_converged(Duration::from_secs(60));
    assert_log_matches(&mut cluster, &outcomes);
}

#[test]
fn each_supervised_actor_killed_is_restarted_and_readiness_says_so_meanwhile() {
    let cluster = TestCluster::start(ClusterOptions {
        node_extra: vec![(2, "[drill]\nkill_actors = true".into())],
        ..ClusterOptions::default()
    });
    cluster.wait_converged(Duration::from_secs(60));
    let operator = cluster.peer_client("admin");
    let kill = |node: usize, actor: &str| {
        let response = operator
            .post(format!(
                "{}/admin/v1/drill/kill-actor",
                cluster.peer_url(node)
            ))
            .json(&serde_json::json!({"actor": actor, "restartAfterMs": 1500}))
            .send()
            .expect("peer listener answers");
        response.status().as_u16()
    };
    // Off unless the node's configuration says it is a drill.
    assert_eq!(kill(1, "quota-ledger"), 400);
    cluster.wait_ready(2, Duration::from_secs(60));
    for actor in ["quota-ledger", "entitlement-cache", "key-shard"] {
        assert_eq!(kill(2, actor), 202, "{actor}");
        // Not ready while it is down, naming the actors check…
        let (status, failing) = cluster.readiness(2).expect("readyz answers");
        assert_eq!(status, 503, "{actor}: {failing:?}");
        assert!(
            failing.contains(&"actors".to_owned()),
            "{actor}: {failing:?}"
        );
        // …ready again once its supervisor restarted it, and signing through it works.
        cluster.wait_ready(2, Duration::from_secs(60));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match cluster.sign(2) {
                Ok((200, _)) => break,
                other => assert!(
                    Instant::now() < deadline,
                    "{actor}: signing through node 2: {other:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("{actor}: killed, not ready, restarted, signing again");
    }
    let metrics = reqwest::blocking::get(format!("{}/metrics", cluster.api_url(2)))
        .and_then(|r| r.text())
        .expect("metrics");
    for actor in ["quota-ledger", "entitlement-cache", "key-shard"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("stella_signer_actor_restarts_total")
                    && l.contains(&format!("actor=\"{actor}\""))),
            "{actor} restart counted"
        );
    }
}

#[test]
fn a_leader_stopped_with_sigterm_drains_hands_over_and_loses_nothing() {
    let mut cluster = TestCluster::start(options(false, "shutdown_grace_ms = 5000"));
    cluster.wait_converged(Duration::from_secs(60));
    let callers = Callers::start(&cluster, 4);
    callers.wait_acked(20, "before the stop");
    let leader = cluster.leader().expect("a leader");
    let others: Vec<usize> = (1..=3).filter(|id| *id != leader).collect();
    let term_before = cluster.status(others[0]).expect("status")["term"].as_u64();
    let stopped = Instant::now();
    cluster.terminate(leader);
    // Not ready from the signal on (the balancer drains it), while it still answers.
    loop {
        let (status, failing) = cluster
            .readiness(leader)
            .expect("it still answers during the grace");
        if status == 503 {
            assert!(failing.contains(&"accepting".to_owned()), "{failing:?}");
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_millis(4500),
            "still ready after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    callers.target(&others);
    let (exit, logs) = cluster.reap(leader);
    assert!(exit.success(), "a clean exit: {exit:?}");
    // It handed leadership over itself (not left it to an election by timeout).
    let handover = logs
        .iter()
        .find(|l| l.contains("leadership transfer") && l.contains("\"moved\":true"));
    assert!(
        handover.is_some(),
        "no handover: {:?}",
        &logs[logs.len().saturating_sub(20)..]
    );
    println!("{}", handover.map_or("", String::as_str));
    // Leadership moved to a caught-up voter, in a newer term.
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_leader = loop {
        if let Some(status) = cluster.status(others[0])
            && let Some(l) = status["leader"].as_u64()
            && others.contains(&(l as usize))
            && status["term"].as_u64() > term_before
        {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader after the handover"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "leader {leader} stopped with SIGTERM; node {new_leader} leads {:?} after the signal",
        stopped.elapsed()
    );
    callers.wait_acked(20, "after the stop");
    let attempts = callers.finish();
    let outcomes = assert_honest_outcomes(&attempts);
    cluster.restart(leader);
    cluster.wait_converged(Duration::from_secs(60));
    assert_log_matches(&mut cluster, &outcomes);
}
