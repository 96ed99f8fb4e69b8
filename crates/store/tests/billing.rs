//! Credits on both databases: the hold inside the submit transaction, the
//! ledger's arithmetic, grants once per purchase, refunds into debt, notices.

use domain::ids::new_id;
use domain::ErrorCode;
use store::{
    BillingAction, BillingEvent, EventOutcome, NewGrant, NewMail, NewPayment, NewTask, NewUser, Store, Submitted, SubscriptionState, Task,
    User,
};

store::store_tests!(
    c18_hundred_concurrent_submits_on_a_balance_for_ten_accept_exactly_ten,
    c18_a_task_is_charged_at_most_once_whatever_happens,
    c13_balance_equals_the_sum_of_the_ledger_after_random_operations,
    c13_grants_are_spent_earliest_expiry_first_and_expire,
    c14_an_event_acts_once_and_a_purchase_grants_once,
    c15_card_numbers_are_never_stored,
    c16_refund_after_partial_spend_takes_back_the_rest_and_records_debt,
    c16_partial_refunds_and_refund_before_purchase,
    c17_low_balance_notice_is_queued_once_per_crossing,
    c33_payments_outlive_the_account_without_a_link,
    submit_without_credits_writes_nothing,
);

async fn user(store: &Store, email: &str) -> User {
    store
        .create_user(NewUser { email: email.into(), name: "Buyer".into(), password_hash: None, locale: Some("en".into()) })
        .await
        .expect("create user")
}

fn task(owner: &User, cost: i64) -> NewTask {
    NewTask {
        owner_id: owner.id.clone(),
        kind: "generate".into(),
        prompt: "a lighthouse".into(),
        params: r#"{"size":{"width":256,"height":256},"style":"none","n":1,"seed":1}"#.into(),
        provider: Some("procedural".into()),
        model: Some("m".into()),
        cost,
        max_attempts: 2,
        idempotency_key: None,
        request_hash: None,
    }
}

async fn grant(store: &Store, owner: &User, amount: i64, expires_at: Option<i64>) -> bool {
    store
        .grant_credits(NewGrant {
            user_id: owner.id.clone(),
            amount,
            source: "test".into(),
            key: format!("test:{}", new_id()),
            reason: "test".into(),
            expires_at,
        })
        .await
        .unwrap()
}

async fn submit(store: &Store, owner: &User, cost: i64) -> Result<Task, ErrorCode> {
    match store.submit_task(task(owner, cost)).await {
        Ok(Submitted::Created(t)) => Ok(t),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(e) => Err(e.code),
    }
}

/// Every invariant of the ledger at once.
async fn check_invariants(store: &Store, owner: &User, tasks: &[String]) {
    let b = store.balance(&owner.id).await.unwrap();
    assert_eq!(b.net(), store.ledger_sum(&owner.id).await.unwrap(), "net balance == sum(ledger): {b:?}");
    assert!(b.available >= 0 && b.held >= 0 && b.debt >= 0, "{b:?}");
    assert!(!(b.available > 0 && b.debt > 0), "credits pay debt first: {b:?}");
    let lots: i64 = store.credit_lots(&owner.id).await.unwrap().iter().filter(|l| l.status == "open").map(|l| l.remaining).sum();
    assert_eq!(lots, b.available, "available == what is left in open lots");
    let mut held = 0;
    for id in tasks {
        if let Some((amount, status)) = store.task_hold(id).await.unwrap() {
            if status == "held" {
                held += amount;
            }
        }
    }
    assert_eq!(held, b.held, "held == open holds");
}

fn purchase(provider: &str, event_id: &str, owner: &User, reference: &str, payment_ref: &str, credits: i64) -> BillingEvent {
    BillingEvent {
        provider: provider.into(),
        event_id: event_id.into(),
        event_type: "checkout.session.completed".into(),
        summary: format!(r#"{{"reference":"{reference}"}}"#),
        action: BillingAction::Grant {
            user_id: owner.id.clone(),
            credits,
            source: "pack".into(),
            reason: "pack:starter".into(),
            expires_at: None,
            payment: NewPayment {
                provider: provider.into(),
                reference: reference.into(),
                payment_ref: Some(payment_ref.into()),
                product: "pack:starter".into(),
                amount_minor: 1000,
                currency: "usd".into(),
            },
            subscription: None,
            receipt: Some(NewMail {
                user_id: Some(owner.id.clone()),
                kind: "receipt".into(),
                to_addr: owner.email.clone(),
                subject: "Receipt".into(),
                body_text: "Thanks".into(),
            }),
        },
    }
}

fn refund(provider: &str, event_id: &str, payment_ref: &str, refunded_minor: Option<i64>) -> BillingEvent {
    BillingEvent {
        provider: provider.into(),
        event_id: event_id.into(),
        event_type: "charge.refunded".into(),
        summary: "{}".into(),
        action: BillingAction::TakeBack { provider: provider.into(), payment_ref: payment_ref.into(), refunded_minor, dispute: false },
    }
}

async fn c18_hundred_concurrent_submits_on_a_balance_for_ten_accept_exactly_ten(store: Store) {
    let owner = user(&store, "c18@example.org").await;
    assert!(grant(&store, &owner, 10, None).await);
    let mut joins = Vec::new();
    for _ in 0..100 {
        let (store, owner) = (store.clone(), owner.clone());
        joins.push(tokio::spawn(async move { submit(&store, &owner, 1).await }));
    }
    let mut accepted = Vec::new();
    for j in joins {
        match j.await.unwrap() {
            Ok(t) => accepted.push(t.id),
            Err(code) => assert_eq!(code, ErrorCode::InsufficientCredits),
        }
    }
    assert_eq!(accepted.len(), 10, "exactly ten tasks accepted");
    assert_eq!(store.list_tasks(&owner.id, None, 100).await.unwrap().items.len(), 10, "refused submits wrote no task");
    let b = store.balance(&owner.id).await.unwrap();
    assert_eq!((b.available, b.held), (0, 10));
    // Exactly ten run: the worker side captures each once.
    let mut ran = 0;
    while let Some(t) = store.claim_task("w", 30_000).await.unwrap() {
        assert!(store.complete_task(&t.id, "w", &[]).await.unwrap());
        ran += 1;
    }
    assert_eq!(ran, 10);
    let b = store.balance(&owner.id).await.unwrap();
    assert_eq!((b.available, b.held, b.debt), (0, 0, 0));
    check_invariants(&store, &owner, &accepted).await;
}

async fn c18_a_task_is_charged_at_most_once_whatever_happens(store: Store) {
    let owner = user(&store, "once@example.org").await;
    grant(&store, &owner, 20, None).await;
    // A retryable failure re-queues with the hold kept; an expired lease on
    // the last attempt fails the task and releases the hold, once.
    let t = submit(&store, &owner, 4).await.unwrap();
    let c = store.claim_task("w1", 30_000).await.unwrap().unwrap();
    assert!(store.fail_task(&c.id, "w1", "unavailable", "down", true).await.unwrap());
    assert_eq!(store.task_hold(&t.id).await.unwrap(), Some((4, "held".into())), "re-queued: still held");
    store.claim_task("w2", -1).await.unwrap().unwrap();
    assert_eq!(store.requeue_expired().await.unwrap(), 1);
    assert_eq!(store.requeue_expired().await.unwrap(), 0);
    assert_eq!(store.get_task(&owner.id, &t.id).await.unwrap().status, domain::task::TaskStatus::Failed);
    assert_eq!(store.task_hold(&t.id).await.unwrap(), Some((4, "released".into())), "attempts exhausted → released");
    assert_eq!(store.balance(&owner.id).await.unwrap().available, 20);
    let first = t.id;

    // Success after a lost lease: the late worker records nothing, nothing is charged twice.
    let t = submit(&store, &owner, 3).await.unwrap();
    let c = store.claim_task("a", 30_000).await.unwrap().unwrap();
    assert!(store.complete_task(&c.id, "a", &[]).await.unwrap());
    assert!(!store.complete_task(&c.id, "a", &[]).await.unwrap(), "a second completion is refused");
    assert_eq!(store.task_hold(&t.id).await.unwrap(), Some((3, "captured".into())));
    assert!(store.cancel_task(&owner.id, &t.id).await.is_err(), "a finished task cannot be canceled (and refunded)");

    // Canceled while running: released once; the worker's completion does nothing.
    let t2 = submit(&store, &owner, 5).await.unwrap();
    let c = store.claim_task("b", 30_000).await.unwrap().unwrap();
    store.cancel_task(&owner.id, &t2.id).await.unwrap();
    assert!(!store.complete_task(&c.id, "b", &[]).await.unwrap());
    assert!(!store.fail_task(&c.id, "b", "internal", "x", false).await.unwrap());
    assert_eq!(store.task_hold(&t2.id).await.unwrap(), Some((5, "released".into())));
    let b = store.balance(&owner.id).await.unwrap();
    assert_eq!((b.available, b.held), (17, 0), "20 - 3 charged");
    let entries = store.ledger_entries(&owner.id, None, 100).await.unwrap().items;
    assert_eq!(entries.iter().filter(|e| e.kind == "capture").count(), 1);
    assert_eq!(entries.iter().filter(|e| e.kind == "release").count(), 2, "the failed and the canceled task");
    check_invariants(&store, &owner, &[first, t.id, t2.id]).await;
}

/// xorshift64*: a small deterministic generator, so a failure replays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn c13_balance_equals_the_sum_of_the_ledger_after_random_operations(store: Store) {
    for seed in [0x5eed_u64, 0xc13, 0xdead_beef] {
        let owner = user(&store, &format!("prop{seed}@example.org")).await;
        let mut rng = Rng(seed);
        let mut tasks: Vec<String> = Vec::new();
        let mut purchases: Vec<String> = Vec::new();
        let now = store::now_ms();
        for step in 0..120 {
            match rng.below(10) {
                0 => {
                    let expires = match rng.below(3) {
                        0 => None,
                        1 => Some(now - 1000),
                        _ => Some(now + 86_400_000),
                    };
                    grant(&store, &owner, 1 + rng.below(20) as i64, expires).await;
                }
                1 => {
                    let reference = format!("cs_{seed}_{step}");
                    let pi = format!("pi_{seed}_{step}");
                    let out = store
                        .apply_billing_event(purchase(
                            "stripe",
                            &format!("evt_{seed}_{step}"),
                            &owner,
                            &reference,
                            &pi,
                            1 + rng.below(30) as i64,
                        ))
                        .await
                        .unwrap();
                    assert!(matches!(out, EventOutcome::Granted { .. }), "{out:?}");
                    purchases.push(pi);
                }
                2 | 3 => {
                    if let Ok(t) = submit(&store, &owner, 1 + rng.below(6) as i64).await {
                        tasks.push(t.id);
                    }
                }
                4 => {
                    if let Some(t) = store.claim_task("w", 30_000).await.unwrap() {
                        match rng.below(3) {
                            0 => assert!(store.complete_task(&t.id, "w", &[]).await.unwrap()),
                            1 => assert!(store.fail_task(&t.id, "w", "internal", "x", rng.below(2) == 0).await.unwrap()),
                            _ => {
                                store.cancel_task(&owner.id, &t.id).await.unwrap();
                            }
                        }
                    }
                }
                5 => {
                    if !tasks.is_empty() {
                        let id = tasks[rng.below(tasks.len() as u64) as usize].clone();
                        let _ = store.cancel_task(&owner.id, &id).await;
                    }
                }
                6 => {
                    if !purchases.is_empty() {
                        let pi = purchases[rng.below(purchases.len() as u64) as usize].clone();
                        let partial = if rng.below(2) == 0 { Some(1 + rng.below(999) as i64) } else { None };
                        store.apply_billing_event(refund("stripe", &format!("evt_r_{seed}_{step}"), &pi, partial)).await.unwrap();
                    }
                }
                7 => {
                    store.expire_credits(Some(&owner.id)).await.unwrap();
                }
                8 => {
                    let amount = rng.below(21) as i64 - 10;
                    if amount != 0 {
                        store.adjust_credits(&owner.id, amount, "correction").await.unwrap();
                    }
                }
                _ => {
                    if let Some(t) = store.claim_task("w", -1).await.unwrap() {
                        let _ = t;
                        store.requeue_expired().await.unwrap();
                    }
                }
            }
            check_invariants(&store, &owner, &tasks).await;
        }
        // Drain: every task ends, every hold settles.
        while let Some(t) = store.claim_task("w", 30_000).await.unwrap() {
            store.complete_task(&t.id, "w", &[]).await.unwrap();
        }
        check_invariants(&store, &owner, &tasks).await;
        assert_eq!(store.balance(&owner.id).await.unwrap().held, 0);
    }
}

async fn c13_grants_are_spent_earliest_expiry_first_and_expire(store: Store) {
    let owner = user(&store, "lots@example.org").await;
    let now = store::now_ms();
    grant(&store, &owner, 5, None).await;
    grant(&store, &owner, 5, Some(now + 2 * 86_400_000)).await;
    grant(&store, &owner, 5, Some(now + 86_400_000)).await;
    let t = submit(&store, &owner, 7).await.unwrap();
    let lots = store.credit_lots(&owner.id).await.unwrap();
    let left: Vec<(Option<i64>, i64)> = lots.iter().map(|l| (l.expires_at.map(|e| e - now), l.remaining)).collect();
    assert_eq!(left, vec![(None, 5), (Some(2 * 86_400_000), 3), (Some(86_400_000), 0)], "soonest expiry first, never-expiring last");
    // Cancel: the credits go back to the lots they came from.
    store.cancel_task(&owner.id, &t.id).await.unwrap();
    let remaining: Vec<i64> = store.credit_lots(&owner.id).await.unwrap().iter().map(|l| l.remaining).collect();
    assert_eq!(remaining, vec![5, 5, 5]);
    // An expired grant leaves the balance with an expiry row.
    grant(&store, &owner, 4, Some(now - 1)).await;
    assert_eq!(store.balance(&owner.id).await.unwrap().available, 19);
    assert_eq!(store.expire_credits(None).await.unwrap(), 4);
    assert_eq!(store.expire_credits(None).await.unwrap(), 0, "once");
    assert_eq!(store.balance(&owner.id).await.unwrap().available, 15);
    let entries = store.ledger_entries(&owner.id, None, 50).await.unwrap().items;
    assert_eq!(entries[0].kind, "expiry");
    assert_eq!(entries[0].amount, -4);
    check_invariants(&store, &owner, &[t.id]).await;
    // History pages, newest first.
    let first = store.ledger_entries(&owner.id, None, 3).await.unwrap();
    let second = store.ledger_entries(&owner.id, first.next_cursor.as_deref(), 3).await.unwrap();
    assert_eq!(first.items.len(), 3);
    assert!(second.items[0].id < first.items[2].id);
}

async fn c14_an_event_acts_once_and_a_purchase_grants_once(store: Store) {
    let owner = user(&store, "once-event@example.org").await;
    let first = store.apply_billing_event(purchase("stripe", "evt_1", &owner, "cs_1", "pi_1", 50)).await.unwrap();
    assert_eq!(first, EventOutcome::Granted { user_id: owner.id.clone(), credits: 50 });
    for _ in 0..5 {
        assert_eq!(
            store.apply_billing_event(purchase("stripe", "evt_1", &owner, "cs_1", "pi_1", 50)).await.unwrap(),
            EventOutcome::Duplicate
        );
    }
    // The same purchase reported by another event: recorded, not granted.
    let mut other = purchase("stripe", "evt_2", &owner, "cs_1", "pi_1", 50);
    other.event_type = "checkout.session.async_payment_succeeded".into();
    assert_eq!(store.apply_billing_event(other).await.unwrap(), EventOutcome::AlreadyGranted);
    // Concurrent deliveries of one new event: one grant.
    let mut joins = Vec::new();
    for _ in 0..10 {
        let (store, owner) = (store.clone(), owner.clone());
        joins.push(tokio::spawn(async move { store.apply_billing_event(purchase("stripe", "evt_3", &owner, "cs_3", "pi_3", 7)).await }));
    }
    let mut granted = 0;
    for j in joins {
        if let Ok(EventOutcome::Granted { .. }) = j.await.unwrap() {
            granted += 1;
        }
    }
    assert_eq!(granted, 1);
    assert_eq!(store.balance(&owner.id).await.unwrap().available, 57);
    assert_eq!(store.payments_of_user(&owner.id).await.unwrap().len(), 2);
    let receipts = store.mail_of_user(&owner.id).await.unwrap().into_iter().filter(|m| m.kind == "receipt").count();
    assert_eq!(receipts, 2, "one receipt per purchase");
    assert_eq!(store.webhook_event("stripe", "evt_2").await.unwrap().unwrap().2, "already_granted");
    // Subscriptions: an older report never overwrites a newer one.
    let sub = |status: &str, at: i64| {
        BillingAction::Subscription(SubscriptionState {
            provider: "stripe".into(),
            external_id: "sub_1".into(),
            user_id: Some(owner.id.clone()),
            plan: Some("pro".into()),
            customer_id: Some("cus_1".into()),
            status: status.into(),
            current_period_end: Some(at + 1000),
            event_at: at,
        })
    };
    for (id, status, at) in [("evt_s2", "canceled", 2000), ("evt_s1", "active", 1000)] {
        let event = BillingEvent {
            provider: "stripe".into(),
            event_id: id.into(),
            event_type: "customer.subscription.updated".into(),
            summary: "{}".into(),
            action: sub(status, at),
        };
        store.apply_billing_event(event).await.unwrap();
    }
    let subs = store.subscriptions_of_user(&owner.id).await.unwrap();
    assert_eq!((subs.len(), subs[0].status.as_str()), (1, "canceled"));
}

async fn c15_card_numbers_are_never_stored(store: Store) {
    let owner = user(&store, "card@example.org").await;
    let mut event = purchase("stripe", "evt_card", &owner, "cs_card", "pi_card", 5);
    event.summary = r#"{"note":"4242 4242 4242 4242"}"#.into();
    assert_eq!(store.apply_billing_event(event).await.unwrap_err().code, ErrorCode::InvalidInput);
    assert!(store.webhook_event("stripe", "evt_card").await.unwrap().is_none(), "nothing written");
    assert_eq!(store.balance(&owner.id).await.unwrap().available, 0);
}

async fn c16_refund_after_partial_spend_takes_back_the_rest_and_records_debt(store: Store) {
    let owner = user(&store, "refund@example.org").await;
    store.apply_billing_event(purchase("stripe", "evt_buy", &owner, "cs_r", "pi_r", 10)).await.unwrap();
    // Spend 6: 4 captured, 2 still held by a queued task.
    let spent = submit(&store, &owner, 4).await.unwrap();
    let c = store.claim_task("w", 30_000).await.unwrap().unwrap();
    store.complete_task(&c.id, "w", &[]).await.unwrap();
    let queued = submit(&store, &owner, 2).await.unwrap();
    assert_eq!(store.balance(&owner.id).await.unwrap().available, 4);

    let out = store.apply_billing_event(refund("stripe", "evt_refund", "pi_r", None)).await.unwrap();
    assert_eq!(out, EventOutcome::TakenBack { user_id: Some(owner.id.clone()), credits: 10 });
    let b = store.balance(&owner.id).await.unwrap();
    assert_eq!((b.available, b.debt), (0, 6), "unused 4 removed; the 6 spent or held become debt");
    assert_eq!(store.ledger_sum(&owner.id).await.unwrap(), -6);
    assert_eq!(store.apply_billing_event(refund("stripe", "evt_refund", "pi_r", None)).await.unwrap(), EventOutcome::Duplicate);
    assert_eq!(
        store.apply_billing_event(refund("stripe", "evt_refund_again", "pi_r", None)).await.unwrap(),
        EventOutcome::TakenBack { user_id: Some(owner.id.clone()), credits: 0 }
    );
    assert_eq!(store.payments_of_user(&owner.id).await.unwrap()[0].status, "refunded");

    assert_eq!(submit(&store, &owner, 1).await.unwrap_err(), ErrorCode::AccountInDebt, "new tasks refused while in debt");
    // The held task is canceled: its credits came from the refunded purchase and pay 2 of the debt.
    store.cancel_task(&owner.id, &queued.id).await.unwrap();
    assert_eq!(store.balance(&owner.id).await.unwrap().debt, 4);
    // A new purchase settles the debt first.
    store.apply_billing_event(purchase("stripe", "evt_buy2", &owner, "cs_r2", "pi_r2", 10)).await.unwrap();
    let b = store.balance(&owner.id).await.unwrap();
    assert_eq!((b.available, b.debt), (6, 0));
    let after = submit(&store, &owner, 1).await.expect("settled: tasks run again");
    check_invariants(&store, &owner, &[spent.id, queued.id, after.id]).await;
}

async fn c16_partial_refunds_and_refund_before_purchase(store: Store) {
    let owner = user(&store, "partial@example.org").await;
    store.apply_billing_event(purchase("stripe", "evt_p", &owner, "cs_p", "pi_p", 30)).await.unwrap();
    // 1000 minor units bought 30 credits; 250 refunded takes back 8 (rounded up), then the rest.
    store.apply_billing_event(refund("stripe", "evt_p1", "pi_p", Some(250))).await.unwrap();
    assert_eq!(store.balance(&owner.id).await.unwrap().available, 22);
    assert_eq!(store.payments_of_user(&owner.id).await.unwrap()[0].status, "partially_refunded");
    store.apply_billing_event(refund("stripe", "evt_p2", "pi_p", Some(1000))).await.unwrap();
    assert_eq!(store.balance(&owner.id).await.unwrap().available, 0);
    assert_eq!(store.payments_of_user(&owner.id).await.unwrap()[0].status, "refunded");
    // A refund reported before its purchase: the purchase then grants nothing.
    store.apply_billing_event(refund("stripe", "evt_early", "pi_e", None)).await.unwrap();
    let out = store.apply_billing_event(purchase("stripe", "evt_late", &owner, "cs_e", "pi_e", 30)).await.unwrap();
    assert_eq!(out, EventOutcome::RefundedBeforeGrant);
    assert_eq!(store.balance(&owner.id).await.unwrap().available, 0);
    check_invariants(&store, &owner, &[]).await;
}

async fn c17_low_balance_notice_is_queued_once_per_crossing(store: Store) {
    let owner = user(&store, "low@example.org").await;
    grant(&store, &owner, 10, None).await;
    let mail = || NewMail {
        user_id: Some(owner.id.clone()),
        kind: "low_balance".into(),
        to_addr: owner.email.clone(),
        subject: "Low".into(),
        body_text: "Low".into(),
    };
    let mut notices = 0;
    for _ in 0..9 {
        submit(&store, &owner, 1).await.unwrap();
        notices += usize::from(store.notify_low_balance(&owner.id, 5, mail()).await.unwrap());
    }
    assert_eq!(notices, 1, "one notice when the balance went below 5, not one per task");
    grant(&store, &owner, 20, None).await;
    assert!(!store.notify_low_balance(&owner.id, 5, mail()).await.unwrap(), "back above: re-armed, nothing sent");
    for _ in 0..19 {
        submit(&store, &owner, 1).await.unwrap();
        notices += usize::from(store.notify_low_balance(&owner.id, 5, mail()).await.unwrap());
    }
    assert_eq!(notices, 2, "a second crossing, a second notice");
    assert_eq!(store.mail_of_user(&owner.id).await.unwrap().iter().filter(|m| m.kind == "low_balance").count(), 2);
}

async fn c33_payments_outlive_the_account_without_a_link(store: Store) {
    let owner = user(&store, "gone@example.org").await;
    store.apply_billing_event(purchase("stripe", "evt_g", &owner, "cs_g", "pi_g", 10)).await.unwrap();
    store.delete_account(&owner.id, &new_id()).await.unwrap();
    let all = store.payments(10).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].user_id, None, "kept for accounting, pseudonymised");
    assert_eq!(all[0].amount_minor, 1000);
    // A late refund of it is recorded and touches no account.
    assert_eq!(store.apply_billing_event(refund("stripe", "evt_g2", "pi_g", None)).await.unwrap(), EventOutcome::Recorded);
}

async fn submit_without_credits_writes_nothing(store: Store) {
    let owner = user(&store, "broke@example.org").await;
    assert_eq!(submit(&store, &owner, 1).await.unwrap_err(), ErrorCode::InsufficientCredits);
    grant(&store, &owner, 3, None).await;
    assert_eq!(submit(&store, &owner, 4).await.unwrap_err(), ErrorCode::InsufficientCredits);
    assert!(store.list_tasks(&owner.id, None, 10).await.unwrap().items.is_empty());
    assert_eq!(store.ledger_entries(&owner.id, None, 10).await.unwrap().items.len(), 1, "only the grant");
    // Free tasks (billing off) need no balance at all.
    assert!(submit(&store, &owner, 0).await.is_ok());
    assert_eq!(store.balance(&owner.id).await.unwrap().available, 3);
}
