//! `twopc admin` against a real cluster: find a stuck transaction, resolve
//! it safely, and report heuristic mismatches.

mod support;

use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use support::{json, text, twopc, twopc_bin, wait_for, Cluster};
use twopc_common::TxnId;

const TOKEN: &str = "test-admin-token";

fn admin(config: &Path, args: &[&str], token: Option<&str>) -> Result<Output> {
    let mut cmd = std::process::Command::new(twopc_bin());
    cmd.arg("admin").arg("--config").arg(config).args(args).env_remove("TWOPC_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("TWOPC_ADMIN_TOKEN", t);
    }
    Ok(cmd.output()?)
}

/// `twopc admin --json --coordinator ADDR ARGS` (the cluster asked from the
/// coordinator; `--json` before the subcommand).
fn admin_via_coordinator(addr: &str, args: &[&str]) -> Result<Output> {
    let mut cmd = std::process::Command::new(twopc_bin());
    cmd.args(["admin", "--json", "--coordinator", addr]).args(args).env("TWOPC_ADMIN_TOKEN", TOKEN);
    Ok(cmd.output()?)
}

/// A cluster with an admin token whose coordinator runs with `faults`.
fn cluster(faults: &str) -> Result<(Cluster, PathBuf)> {
    let mut cluster = Cluster::new(3);
    cluster.set_admin_token(TOKEN);
    for id in cluster.participant_ids() {
        cluster.spawn(&id, &[])?;
    }
    cluster.spawn("c1", &[("TWOPC_FAULTS", faults)])?;
    let path = cluster.write_cluster_file()?;
    Ok((cluster, path))
}

async fn commit_everywhere(cluster: &Cluster, prefix: &str) -> Result<(TxnId, Vec<Vec<u8>>)> {
    let keys = cluster.key_per_participant(prefix);
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    let txid = txn.txid().clone();
    for key in &keys {
        txn.put(key, b"v".to_vec());
    }
    let _ = txn.commit().await;
    Ok((txid, keys))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecided_transaction_is_listed_and_a_forced_abort_releases_it() -> Result<()> {
    let (mut cluster, config) = cluster("coordinator.before-decision=crash")?;
    let (txid, keys) = commit_everywhere(&cluster, "adm-undecided").await?;
    cluster.wait_exit("c1", Duration::from_secs(10))?;

    let out = admin(&config, &["in-doubt", "--json"], None)?;
    let listed = json(&out);
    let entry = &listed["in_doubt"][0];
    assert_eq!(entry["txid"], txid.to_string(), "{listed}");
    assert_eq!(entry["participants"]["p1"], "prepared");
    assert_eq!(entry["locks"]["p1"][0], String::from_utf8_lossy(&keys[0]).as_ref());
    assert!(entry["decision"].as_str().unwrap().contains("unreachable"), "{listed}");
    // For monitoring: younger ones are left out, and counted.
    let out = admin(&config, &["in-doubt", "--older-than", "1h", "--json"], None)?;
    let recent = json(&out);
    assert_eq!(recent["in_doubt"], serde_json::json!([]), "{recent}");
    assert_eq!(recent["younger_not_listed"], 1, "{recent}");
    let out = admin(&config, &["in-doubt", "--older-than", "1h"], None)?;
    assert!(text(&out).contains("(1 younger than 3600s not listed)"), "{}", text(&out));

    // The coordinator is gone: refused without --force, applied with it.
    let out = admin(&config, &["resolve", &txid.to_string(), "--abort"], None)?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("cannot be reached"), "{}", text(&out));
    let out =
        admin(&config, &["resolve", &txid.to_string(), "--abort", "--force", "--reason", "coordinator lost"], None)?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for (key, id) in keys.iter().zip(cluster.participant_ids()) {
        assert_eq!(cluster.lock_holder(&id, key).await?, None, "{id} still holds its lock");
    }
    let out = admin(&config, &["in-doubt", "--json"], None)?;
    assert_eq!(json(&out)["in_doubt"], serde_json::json!([]));

    // The coordinator comes back with no Commit record: it agrees.
    cluster.spawn("c1", &[])?;
    let out = admin(&config, &["status", "--json"], None)?;
    let nodes = json(&out)["nodes"].clone();
    for node in nodes.as_array().unwrap() {
        assert_eq!(node["stats"]["heuristic_mixed"], 0, "{node}");
    }
    let out = admin(&config, &["show", &txid.to_string()], None)?;
    assert!(!text(&out).contains("HEURISTIC-MIXED"), "{}", text(&out));
    assert!(text(&out).contains("coordinator lost"), "the reason is recorded: {}", text(&out));
    // An id of an epoch c1's log never ran is known nowhere: exit 2, and
    // the coordinator's words say why.
    let foreign = format!("c1.{}.1", txid.epoch - 1);
    let out = admin(&config, &["show", &foreign], None)?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("never ran that epoch"), "{}", text(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_forced_everywhere_without_a_logged_decision_is_the_outcome_not_mixed() -> Result<()> {
    // Found by a user: `show` called this HEURISTIC-MIXED against a
    // presumed abort, while `heuristics` said not mixed and `outcome` said
    // committed (the restarted coordinator adopts the participants' commit).
    let (mut cluster, config) = cluster("coordinator.before-decision=crash")?;
    let (txid, keys) = commit_everywhere(&cluster, "adm-forced-commit").await?;
    cluster.wait_exit("c1", Duration::from_secs(10))?;
    let out = admin(&config, &["resolve", &txid.to_string(), "--commit", "--force", "--reason", "test"], None)?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    cluster.spawn("c1", &[])?;
    let out = admin(&config, &["show", &txid.to_string(), "--json"], None)?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = json(&out);
    assert_eq!(shown["heuristic_mixed"], serde_json::json!([]), "{shown}");
    assert!(shown["decision"].as_str().unwrap().starts_with("none logged"), "{shown}");
    let out = admin(&config, &["heuristics", "--json"], None)?;
    assert!(json(&out)["heuristics"].as_array().unwrap().iter().all(|h| h["mixed"] == false), "{}", text(&out));
    let client = cluster.client().await?;
    assert_eq!(client.outcome(&txid).await?, twopc_common::OutcomeStatus::Committed);
    assert_eq!(cluster.read_at("p2", &keys[1]).await?.value.as_deref(), Some(b"v".as_slice()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forcing_against_a_logged_commit_is_refused_then_reported_as_mixed() -> Result<()> {
    // Commit messages are withheld, so participants stay prepared.
    let (mut cluster, config) = cluster("coordinator.commit-send=drop")?;
    let (txid, keys) = commit_everywhere(&cluster, "adm-mixed").await?;
    let out = admin(&config, &["resolve", &txid.to_string(), "--abort"], None)?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("commit (logged)"), "the refusal names the decision: {}", text(&out));

    cluster.kill("c1");
    let out = admin(&config, &["resolve", &txid.to_string(), "--abort", "--force"], None)?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(cluster.read_at("p1", &keys[0]).await?.value, None);
    // Not forgotten while the coordinator's commit may still contradict it.
    let out = admin(&config, &["forget", &txid.to_string()], None)?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no mismatch is recorded"), "{}", text(&out));

    // Back, the coordinator re-drives its commit: the participants refuse
    // it and both sides report the mismatch.
    cluster.spawn("c1", &[])?;
    cluster
        .eventually("the mismatch is reported", Duration::from_secs(30), || async {
            let out = admin(&config, &["status", "--json"], None)?;
            let nodes = json(&out)["nodes"].clone();
            let mixed = |id: &str| {
                nodes.as_array().unwrap().iter().find(|n| n["id"] == id).unwrap()["stats"]["heuristic_mixed"].clone()
            };
            Ok(mixed("c1") == 1 && mixed("p1") == 1)
        })
        .await?;
    let out = admin(&config, &["show", &txid.to_string()], None)?;
    assert!(text(&out).contains("HEURISTIC-MIXED"), "{}", text(&out));
    let shown = json(&admin(&config, &["show", &txid.to_string(), "--json"], None)?);
    assert_eq!(shown["coordinator"]["txid"], txid.to_string(), "{shown}");
    assert_eq!(shown["participants"]["p1"]["txid"], txid.to_string(), "{shown}");
    assert_eq!(shown["participants"]["p1"]["heuristic"]["decision"], "abort", "{shown}");
    // Listed without knowing the txid: every participant's forced outcome.
    let out = admin(&config, &["heuristics", "--json"], None)?;
    let listed = json(&out)["heuristics"].clone();
    let at_p1 = listed.as_array().unwrap().iter().find(|h| h["participant"] == "p1").cloned().unwrap_or_default();
    assert_eq!(at_p1["txid"], txid.to_string(), "{listed}");
    assert_eq!(at_p1["forced"], "abort", "{listed}");
    assert_eq!(at_p1["mixed"], true, "{listed}");
    assert!(at_p1["coordinator_decision"].as_str().is_some_and(|d| d.starts_with("commit")), "{listed}");
    let out = admin(&config, &["heuristics"], None)?;
    assert!(text(&out).contains("MIXED: commit"), "{}", text(&out));
    assert!(cluster.log("c1").contains("heuristic-mixed"), "the coordinator's log says it");
    assert!(cluster.log("p1").contains("heuristic-mixed"), "the participant's log says it");
    // The application asking is not told "committed": its writes are gone.
    let c1 = cluster.coordinator_addr();
    let out = twopc(&["outcome", "--coordinator", &c1, "--json", &txid.to_string()])?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let answer = json(&out);
    assert_eq!((&answer["txid"], &answer["outcome"]), (&txid.to_string().into(), &"mixed".into()), "{answer}");
    let at = answer["forced_abort_at"].as_array().cloned().unwrap_or_default();
    assert!(at.contains(&"p1".into()), "the participants to repair: {answer}");
    assert!(text(&out).contains("forced to abort at p1"), "{}", text(&out));

    // Dealt with: forgotten everywhere, for good (restarts replay no
    // record of it), and a second forget finds nothing.
    let out = admin(&config, &["forget", &txid.to_string(), "--json"], None)?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let forgotten = json(&out)["forgotten_at"].clone();
    for id in ["p1", "p2", "p3", "c1"] {
        assert!(forgotten.as_array().unwrap().iter().any(|f| f == id), "{id} not in {forgotten}");
    }
    for id in ["c1", "p1"] {
        cluster.kill(id);
        cluster.spawn(id, &[])?;
    }
    let out = admin(&config, &["status", "--json"], None)?;
    for node in json(&out)["nodes"].as_array().unwrap() {
        assert_eq!(node["stats"]["heuristic_mixed"], 0, "{node}");
        assert_eq!(node["stats"]["heuristics"], 0, "{node}");
    }
    let out = admin(&config, &["heuristics", "--json"], None)?;
    assert_eq!(json(&out)["heuristics"], serde_json::json!([]), "{}", text(&out));
    let out = admin(&config, &["forget", &txid.to_string()], None)?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_after_the_coordinator_returns_resolves_everything() -> Result<()> {
    let (mut cluster, config) = cluster("coordinator.after-decision-synced=crash")?;
    let (txid, keys) = commit_everywhere(&cluster, "adm-recover").await?;
    cluster.wait_exit("c1", Duration::from_secs(10))?;
    let out = admin(&config, &["in-doubt", "--json"], None)?;
    assert_eq!(json(&out)["in_doubt"][0]["txid"], txid.to_string());
    assert_eq!(json(&out)["in_doubt"][0]["decision_kind"], "unknown", "c1 is down: {}", text(&out));
    // With c1 down it stays in doubt: counted only when old enough (trial
    // 24C: under load, `recover` reported transactions in flight).
    let out = admin(&config, &["recover", "--wait", "0s", "--older-than", "1h", "--json"], None)?;
    assert_eq!(json(&out)["still_in_doubt"], serde_json::json!([]), "{}", text(&out));
    assert_eq!(json(&out)["younger_not_counted"], 1, "{}", text(&out));
    let out = admin(&config, &["recover", "--wait", "0s", "--older-than", "0s", "--json"], None)?;
    assert_eq!(json(&out)["still_in_doubt"][0]["txid"], txid.to_string(), "{}", text(&out));
    cluster.spawn("c1", &[])?;
    let out = admin(&config, &["recover", "--wait", "20s", "--json"], None)?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(json(&out)["still_in_doubt"], serde_json::json!([]));
    let out = admin(&config, &["in-doubt", "--json"], None)?;
    assert_eq!(json(&out)["in_doubt"], serde_json::json!([]));
    assert_eq!(cluster.read_at("p3", &keys[2]).await?.value.as_deref(), Some(b"v".as_slice()));

    // The same, with the cluster asked from the coordinator.
    let c1 = cluster.coordinator_addr();
    let out = admin_via_coordinator(&c1, &["status"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let nodes = json(&out)["nodes"].clone();
    assert_eq!(nodes.as_array().map(Vec::len), Some(4), "{nodes}");
    assert!(nodes.as_array().unwrap().iter().all(|n| n["reachable"] == true), "{nodes}");
    let out = admin_via_coordinator(&c1, &["in-doubt"])?;
    assert_eq!(json(&out)["in_doubt"], serde_json::json!([]), "{}", text(&out));

    // A process that cannot be reached: reported, and exit 3.
    cluster.kill("p2");
    let out = admin(&config, &["status", "--json"], None)?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let p2 = json(&out)["nodes"].as_array().unwrap().iter().find(|n| n["id"] == "p2").cloned().unwrap();
    assert_eq!(p2["reachable"], false, "{p2}");
    let out = admin(&config, &["in-doubt"], None)?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("could not ask p2"), "{}", text(&out));
    // Not "no locks held": some may be p2's; a key's owner alone decides.
    let out = admin(&config, &["locks"], None)?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("at the participants reached"), "{}", text(&out));
    let [p1_key, p2_key] = [&keys[0], &keys[1]].map(|k| String::from_utf8(k.clone()).unwrap());
    let out = admin(&config, &["locks", "--key", &p2_key], None)?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("the key's participant, p2, could not be asked"), "{}", text(&out));
    let out = admin(&config, &["locks", "--key", &p1_key], None)?;
    assert_eq!(out.status.code(), Some(0), "p1 answered for its key: {}", text(&out));
    assert!(text(&out).contains("no locks held"), "{}", text(&out));
    // Recover cannot say nothing is in doubt: p2 may hold prepared
    // transactions (it once said so, with exit 0).
    let out = admin(&config, &["recover", "--wait", "1s"], None)?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(!text(&out).contains("nothing is in doubt\n"), "{}", text(&out));
    assert!(text(&out).contains("not checked: p2"), "{}", text(&out));
    let out = admin(&config, &["recover", "--wait", "1s", "--json"], None)?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(json(&out)["not_checked"][0].as_str().unwrap().starts_with("p2"), "{}", text(&out));
    // A transaction nobody reachable knows, with p2 unreachable: not
    // "unknown" (exit 2), but incomplete (exit 3).
    let out = admin(&config, &["show", &format!("c1.{}.999999", txid.epoch)], None)?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_changes_nothing() -> Result<()> {
    let (mut cluster, config) = cluster("coordinator.before-decision=crash")?;
    let (txid, keys) = commit_everywhere(&cluster, "adm-token").await?;
    cluster.wait_exit("c1", Duration::from_secs(10))?;
    for args in [vec!["status"], vec!["in-doubt"], vec!["resolve", &txid.to_string(), "--abort", "--force"]] {
        let out = admin(&config, &args, Some("not-the-token"))?;
        assert_eq!(out.status.code(), Some(4), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("wrong admin token"), "{}", text(&out));
    }
    assert_eq!(cluster.lock_holder("p1", &keys[0]).await?, Some(txid), "a refused resolve changed nothing");
    let out = admin(&config, &["show", "not-a-txid"], None)?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_refusing_the_token_the_others_take_is_reported_not_shown_as_up() -> Result<()> {
    // Trial 18C: `status` showed such a participant as up (its statistics
    // need no token) while every other command failed on it.
    let mut cluster = Cluster::new(3);
    cluster.set_admin_token(TOKEN);
    cluster.spawn("p1", &[])?;
    cluster.spawn("p2", &[])?;
    cluster.spawn("p3", &[("TWOPC_ADMIN_TOKEN", "another-token")])?;
    cluster.spawn("c1", &[])?;
    let config = cluster.write_cluster_file()?;
    let out = admin(&config, &["status", "--json"], None)?;
    assert_eq!(out.status.code(), Some(3), "incomplete: {}", text(&out));
    let nodes = json(&out)["nodes"].as_array().cloned().unwrap_or_default();
    let p3 = nodes.iter().find(|n| n["id"] == "p3").expect("p3 listed");
    assert_eq!(p3["reachable"], false, "{p3}");
    assert!(p3["error"].as_str().unwrap_or("").contains("wrong admin token"), "{p3}");
    let p2 = nodes.iter().find(|n| n["id"] == "p2").expect("p2 listed");
    assert_eq!(p2["reachable"], true, "{p2}");
    // The text form gives the whole reason too, not a cut table cell.
    let out = admin(&config, &["status"], None)?;
    let full = p3["error"].as_str().unwrap_or("");
    assert!(text(&out).contains(&format!("UNREACHABLE p3 ({}): {full}", cluster.addr("p3"))), "{}", text(&out));
    // The others still report; p3 is named as not asked.
    let out = admin(&config, &["in-doubt"], None)?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("p3"), "{}", text(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forcing_an_abort_of_a_committed_transaction_says_it_committed() -> Result<()> {
    // Trial 18C: "not in doubt at any reachable participant", and no word
    // of the participants that had committed it.
    let (cluster, config) = cluster("")?;
    let (txid, keys) = commit_everywhere(&cluster, "adm-committed").await?;
    cluster
        .eventually("applied everywhere", Duration::from_secs(10), || async {
            Ok(cluster.lock_holder("p1", &keys[0]).await?.is_none())
        })
        .await?;
    let out = admin(&config, &["resolve", &txid.to_string(), "--abort", "--force"], None)?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("p1: committed") && text(&out).contains("cannot be aborted"), "{}", text(&out));
    // Where the cluster is, given after the subcommand too (trial 19C:
    // refused as missing, though each subcommand's help lists it).
    let config_arg = config.display().to_string();
    let out = std::process::Command::new(twopc_bin())
        .args(["admin", "status", "--config", &config_arg, "--json"])
        .env_remove("TWOPC_ADMIN_TOKEN")
        .output()?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = std::process::Command::new(twopc_bin()).args(["admin", "status"]).output()?;
    assert_eq!(out.status.code(), Some(3), "neither given: {}", text(&out));
    assert!(text(&out).contains("--config"), "{}", text(&out));
    Ok(())
}

/// A one-phase commit that reached its participant, which died before
/// answering, is retried by the coordinator and listed as in doubt (the
/// participant's answer decides) until the participant is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_one_phase_commit_is_listed_until_its_participant_answers() -> Result<()> {
    let mut cluster = Cluster::new(3);
    cluster.set_admin_token(TOKEN);
    cluster.spawn("p1", &[])?;
    cluster.spawn("p2", &[("TWOPC_FAULTS", "participant.before-apply=crash")])?;
    cluster.spawn("p3", &[])?;
    cluster.spawn("c1", &[])?;
    let config = cluster.write_cluster_file()?;
    let key = cluster.key_per_participant("adm-one-phase").swap_remove(1);
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    let txid = txn.txid().clone();
    txn.put(&key, b"v".to_vec());
    let commit = tokio::spawn(async move { txn.commit().await });
    cluster.wait_exit("p2", Duration::from_secs(10))?;

    // Listed once the coordinator has seen its call fail, with an age
    // once its timer has seen it (trial 16A: it never had one).
    let mut out = admin(&config, &["in-doubt", "--json"], None)?;
    wait_for("the one-phase commit listed with its age", Duration::from_secs(10), || {
        out = admin(&config, &["in-doubt", "--json"], None).unwrap();
        json(&out)["in_doubt"][0]["age_ms"].is_u64()
    })?;
    assert_eq!(out.status.code(), Some(3), "p2 could not be asked: {}", text(&out));
    let listed = json(&out);
    let entry = &listed["in_doubt"][0];
    assert_eq!(entry["txid"], txid.to_string(), "{listed}");
    assert_eq!(entry["participants"]["p2"], "unreachable", "{listed}");
    assert!(entry["decision"].as_str().unwrap().contains("one-phase commit sent, unanswered"), "{listed}");
    let out = admin(&config, &["show", &txid.to_string()], None)?;
    assert!(text(&out).contains("one-phase-unanswered"), "{}", text(&out));
    let out = admin(&config, &["status", "--json"], None)?;
    let c1 = json(&out)["nodes"].as_array().unwrap().iter().find(|n| n["id"] == "c1").cloned().unwrap();
    assert_eq!(c1["stats"]["undelivered_commits"], 1, "counted as not yet acked: {c1}");

    cluster.spawn("p2", &[])?;
    let outcome = tokio::time::timeout(Duration::from_secs(30), commit).await??;
    assert_eq!(outcome?, txid);
    assert_eq!(cluster.read_at("p2", &key).await?.value, Some(b"v".to_vec()));
    let out = admin(&config, &["in-doubt", "--json"], None)?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(json(&out)["in_doubt"], serde_json::json!([]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_of_another_cluster_is_not_taken_for_this_one() -> Result<()> {
    // The commit is logged, then the coordinator dies before anyone hears.
    let (cluster, config) = cluster("coordinator.after-decision-synced=crash")?;
    let (txid, _) = commit_everywhere(&cluster, "adm-other").await?;
    // Another cluster, with the same ids and the same token, whose c1 has
    // no record of that transaction (so it "presumes abort").
    let mut other = Cluster::new(3);
    other.set_admin_token(TOKEN);
    other.start_all()?;
    let stale = config.with_file_name("stale-cluster.toml");
    let text_of = std::fs::read_to_string(&config)?;
    std::fs::write(&stale, text_of.replace(&cluster.coordinator_addr(), &other.coordinator_addr()))?;

    let out = admin(&stale, &["resolve", &txid.to_string(), "--abort"], None)?;
    assert_eq!(out.status.code(), Some(1), "an abort was forced: {}", text(&out));
    assert!(text(&out).contains("serves another cluster"), "{}", text(&out));
    let out = admin(&stale, &["show", &txid.to_string(), "--json"], None)?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("serves another cluster"), "{}", text(&out));
    // `status` too (it showed that c1 as up: trial 22C).
    let out = admin(&stale, &["status"], None)?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("serves another cluster"), "{}", text(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_against_a_forced_abort_forgotten_with_force_ends_as_mixed_not_retried_forever() -> Result<()> {
    // Found by a user: the coordinator logged its commit and died; an
    // operator forced an abort, then `forget --force` dropped the record.
    // The coordinator, back, re-sent its commit forever ("was aborted
    // here; it cannot commit"), listed in doubt for good, with no way out.
    let (mut cluster, config) = cluster("coordinator.after-decision-synced=crash")?;
    let (txid, _) = commit_everywhere(&cluster, "adm-forgotten").await?;
    cluster.wait_exit("c1", Duration::from_secs(10))?;
    let out = admin(&config, &["resolve", &txid.to_string(), "--abort", "--force"], None)?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = admin(&config, &["forget", &txid.to_string()], None)?;
    assert_eq!(out.status.code(), Some(1), "unsettled (coordinator down): {}", text(&out));
    let out = admin(&config, &["forget", &txid.to_string(), "--force"], None)?;
    assert_eq!(out.status.code(), Some(3), "the coordinator could not be asked: {}", text(&out));
    cluster.spawn("c1", &[])?;
    cluster
        .eventually("the re-driven commit ends, as a mismatch", Duration::from_secs(30), || async {
            let out = admin(&config, &["in-doubt", "--json"], None)?;
            Ok(json(&out)["in_doubt"] == serde_json::json!([]))
        })
        .await?;
    let out = admin(&config, &["status", "--json"], None)?;
    let nodes = json(&out)["nodes"].clone();
    let c1 = nodes.as_array().unwrap().iter().find(|n| n["id"] == "c1").cloned().unwrap_or_default();
    assert_eq!(c1["stats"]["heuristic_mixed"], 1, "{nodes}");
    // `heuristics`, which `status` points to, lists it though no
    // participant keeps its record (trial 18C: "no outcome was forced").
    let out = admin(&config, &["heuristics", "--json"], None)?;
    let listed = json(&out)["heuristics"].as_array().cloned().unwrap_or_default();
    assert!(!listed.is_empty(), "{}", text(&out));
    for finding in &listed {
        assert_eq!(finding["txid"], txid.to_string(), "{finding}");
        assert_eq!(finding["mixed"], true, "{finding}");
        assert!(finding["reason"].as_str().unwrap_or("").contains("reported by c1"), "{finding}");
    }
    // And that finding, in turn, can be forgotten.
    let out = admin(&config, &["forget", &txid.to_string()], None)?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = admin(&config, &["heuristics", "--json"], None)?;
    assert_eq!(json(&out)["heuristics"], serde_json::json!([]), "{}", text(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_is_never_forced_while_the_coordinator_is_collecting_its_votes() -> Result<()> {
    // Found by a user: with p3 paused, an abort forced at p1 and p2 while
    // the coordinator waited for p3's vote; p3's Yes came, and the client
    // heard "committed" with one write of five applied.
    let (cluster, config) = cluster("")?;
    // A first commit opens the coordinator's connections (a new one to a
    // paused process fails at its greeting, and the prepare with it).
    commit_everywhere(&cluster, "adm-deciding-first").await?;
    cluster.signal("p3", libc::SIGSTOP)?;
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    let txid = txn.txid().to_string();
    for key in cluster.key_per_participant("adm-deciding") {
        txn.put(&key, b"v".to_vec());
    }
    let pending = tokio::spawn(txn.commit());
    // p1 and p2 prepare at once; the coordinator waits up to 5 s for p3.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = admin(&config, &["resolve", &txid, "--abort", "--force"], None)?;
    cluster.signal("p3", libc::SIGCONT)?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("refused even with --force"), "{}", text(&out));
    let _ = pending.await?;
    let out = admin(&config, &["heuristics", "--json"], None)?;
    assert_eq!(json(&out)["heuristics"], serde_json::json!([]), "{}", text(&out));
    Ok(())
}

/// Trial 16: an outcome forced where some participants were down, then
/// the opposite one forced once they were back, split the transaction
/// (half its writes applied) with nothing flagged as mixed. An outcome a
/// reachable participant of the transaction already contradicts is now
/// refused, even with --force, naming it and the outcome that keeps the
/// transaction atomic; so is a commit no coordinator decision backs while
/// a participant of it cannot be reached (it may never have prepared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_another_participant_already_contradicts_is_refused_even_with_force() -> Result<()> {
    let (mut cluster, config) = cluster("coordinator.before-decision=crash")?;
    let (txid, keys) = commit_everywhere(&cluster, "adm-split").await?;
    cluster.wait_exit("c1", Duration::from_secs(10))?;
    let t = txid.to_string();
    cluster.kill("p1");
    cluster.kill("p2");
    let out = admin(&config, &["resolve", &t, "--commit", "--force", "--reason", "p3 first"], None)?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("p1, p2 of"), "{}", text(&out));
    assert!(text(&out).contains("cannot be reached"), "{}", text(&out));
    let out = admin(&config, &["resolve", &t, "--abort", "--force", "--reason", "p3 first"], None)?;
    assert_eq!(out.status.code(), Some(3), "applied where reachable, incomplete: {}", text(&out));
    cluster.spawn("p1", &[])?;
    cluster.spawn("p2", &[])?;

    let out = admin(&config, &["resolve", &t, "--commit", "--force", "--reason", "the other way"], None)?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("p3 aborted it (forced by an operator)"), "{}", text(&out));
    assert!(text(&out).contains("--abort"), "{}", text(&out));
    for (key, id) in keys.iter().zip(cluster.participant_ids()).take(2) {
        assert_eq!(cluster.lock_holder(&id, key).await?, Some(txid.clone()), "{id} is still prepared");
    }

    let out = admin(&config, &["resolve", &t, "--abort", "--force", "--reason", "the same way"], None)?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for (key, id) in keys.iter().zip(cluster.participant_ids()) {
        assert_eq!(cluster.lock_holder(&id, key).await?, None, "{id} released its lock");
        assert_eq!(cluster.read_at(&id, key).await?.value, None, "{id}");
    }
    Ok(())
}
