//! `twopc txn` and `twopc get` as a user runs them: the binary against a
//! real cluster, checked by what it prints and its exit code.

mod support;

use anyhow::Result;
use std::process::{Command, Output};
use support::{json, text, twopc, twopc_bin, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_and_get_report_outcomes_and_values_with_their_exit_codes() -> Result<()> {
    let cluster = Cluster::start(3)?;
    let c = cluster.coordinator_addr();

    let out = twopc(&["txn", "--coordinator", &c, "put", "alice", "100", "put", "bob", "50"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("committed "), "{}", text(&out));

    let out = twopc(&["txn", "--coordinator", &c, "--json", "get", "alice", "get", "carol", "put", "carol", "1"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["outcome"], "committed");
    assert_eq!(report["reads"]["alice"], "100");
    assert!(report["reads"]["carol"].is_null(), "{report}");

    // A failed condition aborts (exit 1) and writes nothing; running it
    // again would fail the same way.
    let out = twopc(&["txn", "--coordinator", &c, "expect", "bob", "999", "put", "bob", "0"])?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("aborted"), "{}", text(&out));
    let out = twopc(&["txn", "--coordinator", &c, "--json", "expect", "bob", "999", "put", "bob", "0"])?;
    assert_eq!((json(&out)["outcome"].clone(), json(&out)["retryable"].clone()), ("aborted".into(), false.into()));

    let out = twopc(&["get", "--coordinator", &c, "--json", "alice", "bob", "carol", "dave"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let reads = &json(&out)["reads"];
    assert_eq!((&reads["alice"], &reads["bob"], &reads["carol"]), (&"100".into(), &"50".into(), &"1".into()));
    assert!(reads["dave"].is_null());

    // Nothing listens: nothing was done, and it may work later (exit 4).
    for command in [&["get", "k"][..], &["txn", "put", "k", "v"][..]] {
        let out = twopc(&[&command[..1], &["--coordinator", "127.0.0.1:1", "--json"], &command[1..]].concat())?;
        assert_eq!(out.status.code(), Some(4), "{command:?}: {}", text(&out));
        assert_eq!(json(&out)["retryable"], true, "{command:?}: {}", text(&out));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_file_stores_a_binary_value_too_big_for_a_command_line() -> Result<()> {
    let cluster = Cluster::start(3)?;
    let c = cluster.coordinator_addr();
    let dir = tempfile::tempdir()?;
    // Linux refuses a single argument over 128 KiB: this value could not be
    // given as `put K V`.
    let value: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let file = dir.path().join("value.bin");
    std::fs::write(&file, &value)?;

    let out = twopc(&["txn", "--coordinator", &c, "put-file", "blob", file.to_str().unwrap()])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stored = cluster.client().await?.read(vec![b"blob".to_vec()]).await?;
    assert!(stored[0].value.as_deref() == Some(&value[..]), "the stored value differs from the file");
    // And back, byte for byte.
    let out = twopc(&["get", "--coordinator", &c, "--raw", "blob"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stdout == value, "get --raw returned {} bytes, not the stored value", out.stdout.len());
    // In JSON, exactly too (base64: it is not UTF-8), where it was lossy.
    let out = twopc(&["get", "--coordinator", &c, "--json", "blob"])?;
    let encoded = json(&out)["reads"]["blob"]["base64"].as_str().map(str::to_owned).unwrap_or_default();
    use base64::Engine as _;
    assert!(base64::engine::general_purpose::STANDARD.decode(encoded)? == value, "{}", text(&out));
    let out = twopc(&["get", "--coordinator", &c, "--raw", "no-such-key"])?;
    assert_eq!((out.status.code(), out.stdout.len()), (Some(1), 0), "{}", text(&out));
    let out = twopc(&["get", "--coordinator", &c, "--raw", "blob", "other"])?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    // A file over the value limit, or missing, is a usage error said before
    // anything is sent.
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![0u8; 3 * twopc_common::limits::MAX_VALUE_BYTES])?;
    let too_big = format!("{} bytes, over the value limit", 3 * twopc_common::limits::MAX_VALUE_BYTES);
    for (path, says) in [(big.to_str().unwrap(), too_big.as_str()), ("/nonexistent/v", "cannot open")] {
        let out = twopc(&["txn", "--coordinator", &c, "put-file", "blob", path])?;
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        assert!(text(&out).contains(says), "{}", text(&out));
    }
    let after = cluster.client().await?.read(vec![b"blob".to_vec()]).await?;
    assert_eq!(after[0].version, stored[0].version, "a refused put-file changed the value");
    Ok(())
}

#[test]
fn a_malformed_txn_is_a_usage_error_before_connecting() -> Result<()> {
    // Nothing listens on port 1: the error must come from parsing.
    for (args, says) in
        [(&["frob", "a"][..], "unknown op"), (&["put", "a"][..], "missing V"), (&["put-file", "a"][..], "missing FILE")]
    {
        let out = twopc(&[&["txn", "--coordinator", "127.0.0.1:1"][..], args].concat())?;
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }
    // A flag after a key would be read as a key: refused before connecting.
    let out = twopc(&["get", "--coordinator", "127.0.0.1:1", "k", "--json"])?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("flags must come before the first key"), "{}", text(&out));
    // An unknown flag before the OPs is named (it was taken for an OP, and
    // the error said --coordinator was missing).
    for command in ["txn", "get"] {
        let out = twopc(&[command, "--bogus", "--coordinator", "127.0.0.1:1", "put", "a", "b"])?;
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        assert!(text(&out).contains("unexpected argument '--bogus'"), "{command}: {}", text(&out));
    }
    // After `--`, a key named like a flag is a key: past parsing, the
    // command gets as far as connecting.
    let out = twopc(&["get", "--coordinator", "127.0.0.1:1", "--", "--raw"])?;
    assert!(text(&out).contains("cannot connect"), "{}", text(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_transactions_and_reads_get_a_clear_error_and_change_nothing() -> Result<()> {
    let cluster = Cluster::start(3)?;
    let c = cluster.coordinator_addr();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("one-mib");
    std::fs::write(&file, vec![b'v'; twopc_common::limits::MAX_VALUE_BYTES])?;
    let file = file.to_str().unwrap();
    let puts = |keys: std::ops::Range<usize>| -> Vec<String> {
        keys.flat_map(|i| ["put-file".to_string(), format!("big{i}"), file.to_string()]).collect()
    };
    let txn = |ops: Vec<String>| -> Result<Output> {
        let mut args = vec!["txn".to_string(), "--coordinator".to_string(), c.clone()];
        args.extend(ops);
        Ok(Command::new(twopc_bin()).args(&args).output()?)
    };

    // 40 MiB in one transaction: over the limit, refused before sending.
    let out = txn(puts(0..40))?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("split them into several transactions"), "{}", text(&out));
    let read = cluster.client().await?.read(vec![b"big0".to_vec()]).await?;
    assert_eq!(read[0].value, None, "a refused transaction wrote");

    // 40 MiB written in four transactions, then read back in one `get`:
    // refused with advice (the reply would not fit in a frame), and the
    // connection stays usable.
    for batch in 0..4 {
        let out = txn(puts(batch * 10..batch * 10 + 10))?;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let keys: Vec<String> = (0..40).map(|i| format!("big{i}")).collect();
    let mut args = vec!["get", "--coordinator", &c];
    args.extend(keys.iter().map(String::as_str));
    let out = twopc(&args)?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("read fewer keys at once"), "{}", text(&out));
    let out = twopc(&["get", "--coordinator", &c, "big0", "big39"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    Ok(())
}

/// `twopc outcome --wait 60s TXID` at `coordinator`, run in the background.
fn outcome_waiting(coordinator: &str, txid: &str) -> tokio::task::JoinHandle<Result<Output>> {
    let (coordinator, txid) = (coordinator.to_string(), txid.to_string());
    tokio::task::spawn_blocking(move || twopc(&["outcome", "--coordinator", &coordinator, "--wait", "60s", &txid]))
}

/// `twopc outcome`, for whoever was told "outcome unknown": a pending
/// transaction says so (exit 2), `--wait` waits for its decision, and
/// committed, never-committed and malformed ids get their exit codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_tells_and_waits_for_what_happened_to_a_transaction() -> Result<()> {
    let mut cluster = Cluster::start(2)?;
    let c = cluster.coordinator_addr();

    let out = twopc(&["txn", "--coordinator", &c, "put", "a", "1", "put", "b", "2"])?;
    let committed = String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).unwrap_or_default().to_string();
    let out = twopc(&["outcome", "--coordinator", &c, "--json", &committed])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(json(&out), serde_json::json!({"txid": committed, "outcome": "committed"}));

    // A one-phase commit whose participant died on receiving it stays
    // pending (the coordinator retries it) until the participant is back.
    let key = cluster.key_per_participant("pending")[1].clone();
    cluster.spawn("p2", &[("TWOPC_FAULTS", "participant.before-apply=crash")])?;
    let client = cluster.client().await?;
    let mut txn = client.begin().await?;
    let txid = txn.txid().to_string();
    txn.put(&key, b"v".to_vec());
    let commit = tokio::spawn(async move { txn.commit().await });
    let mut pending = None;
    for _ in 0..50 {
        let out = twopc(&["outcome", "--coordinator", &c, &txid])?;
        if out.status.code() == Some(2) {
            pending = Some(out);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let pending = pending.expect("the transaction never showed as pending");
    assert_eq!(String::from_utf8_lossy(&pending.stdout).trim(), format!("{txid}: pending"));
    let waiter = outcome_waiting(&c, &txid);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    cluster.spawn("p2", &[])?;
    let out = waiter.await??;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{txid}: committed"));
    commit.await??;

    // Never minted: unknown (exit 3), and asking does not move the
    // sequence, even for the largest id (it once crashed the coordinator's
    // next begin). Malformed: usage (exit 3).
    let epoch = txid.split('.').nth(1).unwrap().to_string();
    for seq in ["9999", "18446744073709551614"] {
        let out = twopc(&["outcome", "--coordinator", &c, &format!("c1.{epoch}.{seq}")])?;
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        assert!(text(&out).contains("unknown transaction"), "{}", text(&out));
    }
    let out = twopc(&["txn", "--coordinator", &c, "put", "a", "3"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let seq: u64 = text(&out)
        .split(&format!("c1.{epoch}."))
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()?;
    assert!(seq < 9999, "a question moved the sequence: {}", text(&out));
    let out = twopc(&["outcome", "--coordinator", &c, "not-a-txid"])?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("not a transaction id"), "{}", text(&out));

    // Its coordinator down: asked once, a connection error (exit 4: try
    // again later); `--wait` waits for it to come back.
    cluster.kill("c1");
    let out = twopc(&["outcome", "--coordinator", &c, &committed])?;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let out = twopc(&["outcome", "--json", "--coordinator", &c, &committed])?;
    assert_eq!(json(&out)["retryable"], true, "{}", text(&out));
    let waiter = outcome_waiting(&c, &committed);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    cluster.spawn("c1", &[])?;
    let out = waiter.await??;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{committed}: committed"));
    assert!(text(&out).contains("asking again"), "{}", text(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_piped_into_a_reader_that_stops_ends_quietly() -> Result<()> {
    use std::os::unix::process::ExitStatusExt;
    let cluster = Cluster::start(1)?;
    let c = cluster.coordinator_addr();
    // About 300 KB of output: more than a pipe holds.
    let keys: Vec<String> = (0..10_000).map(|i| format!("a-rather-long-key-{i:06}")).collect();
    let mut child = Command::new(twopc_bin())
        .args(["get", "--coordinator", &c])
        .args(&keys)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // The reader stops at once, like `| head -1` after its line.
    drop(child.stdout.take());
    let out = child.wait_with_output()?;
    // Killed by SIGPIPE, like any Unix tool, not a panic (exit 101).
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}: {}", out.status, text(&out));
    assert!(!text(&out).contains("panicked"), "{}", text(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_given_as_coordinator_is_named_and_never_asked_anything_else() -> Result<()> {
    let cluster = Cluster::start(2)?;
    let c = cluster.coordinator_addr();
    let out = twopc(&["txn", "--coordinator", &c, "put", "k", "1"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let txid = text(&out).split_whitespace().find(|w| w.starts_with("c1.")).unwrap().to_string();
    let p1 = cluster.addr("p1");
    // Each request would have been read as another service's request:
    // `outcome` was answered by the participant's `probe` ("committed").
    for args in [
        vec!["txn", "--coordinator", &p1, "put", "k", "2"],
        vec!["get", "--coordinator", &p1, "k"],
        vec!["outcome", "--coordinator", &p1, &txid],
    ] {
        let out = twopc(&args)?;
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("is participant p1, not a coordinator"), "{args:?}: {}", text(&out));
    }
    // With a list, the participant is passed over for the coordinator.
    let both = format!("{p1},{c}");
    let out = twopc(&["outcome", "--coordinator", &both, &txid])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    Ok(())
}

/// Output that cannot be written (stdout on a full disk) is said on
/// stderr, not a panic (exit 101, after a transaction had committed):
/// `txn` keeps its outcome's exit code, `get` fails (exit 1). And an
/// address that can never work is a usage error (exit 3), not "try
/// again later" (exit 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_output_and_impossible_addresses_get_their_own_exit_codes() -> Result<()> {
    let cluster = Cluster::start(2)?;
    let c = cluster.coordinator_addr();
    let to_full_disk = |args: &[&str]| -> Result<Output> {
        Ok(Command::new(twopc_bin()).args(args).stdout(std::fs::File::create("/dev/full")?).output()?)
    };
    let out = to_full_disk(&["txn", "--coordinator", &c, "put", "full", "1"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("could not write the output to stdout"), "{}", text(&out));
    let out = twopc(&["get", "--coordinator", &c, "full"])?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "full = 1\n", "it committed");
    // Its own code: 1 would say `--raw`'s key is absent (trial 19C).
    for args in [&["get", "--coordinator", &c, "full"][..], &["get", "--coordinator", &c, "--raw", "full"]] {
        let out = to_full_disk(args)?;
        assert_eq!(out.status.code(), Some(5), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("No space left on device"), "{}", text(&out));
    }

    for bad in ["nonsense", "127.0.0.1:99999", &format!("{c},127.0.0.1:0")] {
        let out = twopc(&["txn", "--coordinator", bad, "put", "a", "1"])?;
        assert_eq!(out.status.code(), Some(3), "{bad}: {}", text(&out));
        let out = twopc(&["outcome", "--coordinator", bad, "--wait", "3s", "c1.1.1"])?;
        assert_eq!(out.status.code(), Some(3), "{bad}: {}", text(&out));
    }
    // `--wait 0s` still asks once.
    let out = twopc(&["txn", "--coordinator", &c, "put", "w", "1"])?;
    let txid = String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).unwrap_or_default().to_string();
    let out = twopc(&["outcome", "--coordinator", &c, "--wait", "0s", &txid])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    Ok(())
}
