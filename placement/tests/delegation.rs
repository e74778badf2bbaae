//! Property: an attempt on a replica leaves it for another target only when the replica
//! certainly does not run the job, whatever the replica answers and in whatever order.

use proptest::prelude::*;
use spillway_placement::delegation::{Attempt, Found, Next, ReconcilePolicy, Submitted};
use spillway_placement::handover::{Effect, HandoverState, Holder, Ledger, ToAgent};

#[derive(Debug, Clone)]
enum Answer {
    Submit(Submitted),
    Check(Found),
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        Just(Answer::Submit(Submitted::Accepted { done: false })),
        Just(Answer::Submit(Submitted::Accepted { done: true })),
        Just(Answer::Submit(Submitted::Refused("HTTP 503".into()))),
        Just(Answer::Submit(Submitted::NotSent("refused".into()))),
        Just(Answer::Submit(Submitted::NoAnswer("timeout".into()))),
        Just(Answer::Check(Found::Running)),
        Just(Answer::Check(Found::Absent)),
        Just(Answer::Check(Found::Unknown("timeout".into()))),
        Just(Answer::Check(Found::Stopped("Lambda timeout".into()))),
    ]
}

proptest! {
    #[test]
    fn a_replica_that_may_run_the_job_is_only_left_on_proof(answers in prop::collection::vec(answer(), 1..30)) {
        let mut a = Attempt::new("endpoint:x", ReconcilePolicy::default());
        // Whether a request may have reached the replica, tracked independently of the code.
        let mut exposed = false;
        for answer in answers {
            let (next, proof) = match answer {
                Answer::Submit(s) => {
                    let ambiguous = matches!(s, Submitted::NoAnswer(_) | Submitted::Accepted { .. });
                    let next = a.submitted(s);
                    exposed |= ambiguous;
                    (next, false)
                }
                Answer::Check(f) => {
                    // Absent: never started; Stopped: stopped unfinished, nothing delivered.
                    let proof = matches!(f, Found::Absent | Found::Stopped(_));
                    (a.reconciled(f), proof)
                }
            };
            match next {
                Next::Elsewhere(_) => {
                    prop_assert!(!exposed || proof, "left a replica that may run the job");
                    break;
                }
                Next::Finished { .. } | Next::GiveUp(_) => break,
                Next::Wait | Next::Reconcile { .. } => {}
            }
            prop_assert!(a.reconciles <= ReconcilePolicy::default().max_tries);
        }
    }
}

#[test]
fn a_lost_placement_goes_to_the_next_target_then_home() {
    let replica = |id: &str| Holder::Replica(id.to_owned());
    let mut ledger: Ledger<u32, ()> = Ledger::new(3);
    ledger.offer(7, "origin", "f", |_| Some(replica("endpoint:a")));
    // A failure reported by someone who does not hold the lease changes nothing.
    assert!(
        ledger
            .placement_lost(7, &replica("endpoint:z"), "HTTP 503", |_| {
                Some(Holder::node("b"))
            })
            .is_empty()
    );
    let effects = ledger.placement_lost(7, &replica("endpoint:a"), "HTTP 503", |visited| {
        assert_eq!(visited, [Holder::node("origin"), replica("endpoint:a")]);
        Some(replica("oscar:c/f"))
    });
    assert!(effects.contains(&Effect::Send {
        to: replica("oscar:c/f"),
        msg: ToAgent::Place { id: 7, attempt: 2 }
    }));
    let effects = ledger.placement_lost(7, &replica("oscar:c/f"), "HTTP 401", |_| None);
    assert!(matches!(
        effects.last(),
        Some(Effect::Send { to, msg: ToAgent::Return(7, _) }) if to.is_node("origin")
    ));
    assert!(matches!(
        ledger.get(&7).map(|h| &h.state),
        Some(HandoverState::Returning(_))
    ));
}
