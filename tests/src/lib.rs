//! twopc-tests: the deterministic simulator ([`sim`]) and the exhaustive
//! model checker ([`model`]), both driving the REAL protocol engines
//! (`twopc_participant::engine`, `twopc_coordinator::engine`) through
//! executors that mirror the runtimes.
//!
//! # What is checked, where, under which faults
//!
//! Faults. **Sim** (per seed, 8 profiles cycled by seed: calm, lossy,
//! partitions, participant-crashes, coordinator-crashes, crash-points,
//! slow-disk, everything): message loss, duplication, delay and so
//! reordering, partitions, crashes and restarts of any server at any time
//! and at protocol moments (crash points), fsync latency (a crash before a
//! sync completes loses it — the real `MemWal` drops the unsynced tail;
//! lazy writes become durable with the next sync or the WAL's background
//! sync after `LAZY_SYNC_INTERVAL` of quiet).
//! After the fault phase everything heals; the run must settle; the
//! resolver asks the outcome of every submitted transaction; every server
//! crashes and recovers once more and the run must settle again; then the
//! end-of-run checks. **Model** (exhaustive): 1 coordinator, 1–3
//! participants, 1–2 transactions; every interleaving of deliveries
//! (reordering), losses, duplicates, RPC deadlines (early ones too),
//! disk writes, one-phase commits never sent (their participant down),
//! outcome questions, and crashes of any process keeping any
//! prefix of its lazy writes and losing the rest and every unsynced write
//! — within per-path fault budgets.
//!
//! | property (design invariant) | sim | model | negative control (must be caught) |
//! |---|---|---|---|
//! | I1 Yes only after the Prepared record is durable | ghost check at every Yes | `VoteDurable` | `VoteBeforeSync` (sim a, model) |
//! | I2 Committed only after a durable decision (Commit record, or the 1PC participant's apply) | ghost check at every Committed answer | `CommittedDurable` | `CommitBeforeSync` (sim b, model), `ApplyBeforeSync` (sim c: lazy one-phase apply) |
//! | sync before ack: a participant acks a commit only once its apply is durable (the coordinator may then forget) | ghost check at every commit ack | `AckDurable`: checked at every commit ack (acks wait for a sync covering the lazy apply, or the WAL's own sync) | `AckBeforeSync` (sim g and the model; ghost check only: the coordinator remembers the last 100,000 decisions, so the black box never sees the loss; real crashes in `cli/tests/t30_durability_rules.rs`) |
//! | I3 commit decided only if every participant prepared | ghost check at every `SyncDecision` | `DecideAllPrepared` | `TimeoutIsYes` (sim e, model) |
//! | I4 atomicity: all participants apply or none (second-phase applies are lazy: recovery must redo a lost one) | end: durable logs | `Resolves` (after fault-free completion) | sim a, e black-box; model `VoteBeforeSync`, `LostIsNotSent` (a one-phase commit that may have been delivered reported as never sent) |
//! | I5 no acknowledged commit lost | end: heard Committed ⇒ applied everywhere | `Resolves` | sim b, c, d black-box |
//! | I6 locks held until the outcome, across restarts | end: serializability and bank totals; no lock left after healing | `Resolves` (no lock left) | sim c (locks released before the apply is durable) |
//! | I7 every in-doubt transaction resolves once the coordinator is reachable | settle bound after healing; nothing in doubt, no lock; settle again after a final restart of everything | `Resolves` | model `NoOutcomeQuestions` |
//! | I8 committed transactions serializable | end: version dependency graph (ww, wr, rw) acyclic, no lost update, no version gap; bank total conserved; atomic-set keys agree | — | `SkipReadValidation` (sim f); checker unit tests (write skew) |
//! | I9 loss, duplication, reordering: effects as if delivered once | every sim profile | every configuration | — (a fault model, not a property) |
//! | I10 a logged decision never changes | ghost: no Aborted after a durable Commit, no Commit logged after Aborted; end: heard Committed vs `outcome` | `DecisionStable` | `ForgetfulCoordinator` (sim d, model) |
//! | TCConsistent: no txid committed at one participant and aborted after prepare at another | ghost at each apply/abort; end | `TcConsistent` | `ForgetfulCoordinator` (model) |
//! | outcome answers match what is applied (unknown outcomes resolve consistently) | end: resolver's `outcome` vs durable logs and what clients heard | — | sim b, d |
//! | every request is answered | when quiet, no engine holds an unanswered request | — | — (found a real bug, now fixed: `tests/known_bugs.rs`) |
//! | determinism: a seed replays the same trace | trace hash of two runs | — | — |
//!
//! "Ghost" checks are white-box (the simulator knows what is durable);
//! every sim negative control is also required to be caught with them
//! off, by the black-box end-of-run checks alone.
//!
//! Tests: `tests/simulation.rs` (seeds, determinism, controls, replay,
//! long run) and `tests/model_check.rs` (configurations, controls).
//! Replay a simulation seed: `TWOPC_SIM_SEED=N cargo test -p twopc-tests
//! --test simulation replay_one_seed -- --nocapture`.

pub mod model;
pub mod sim;
