use super::*;

#[tokio::test]
async fn ids_differ_within_a_process() {
    // Connecting is not needed to make inboxes.
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect("127.0.0.1:1")
        .await
        .expect("client");
    let ids: std::collections::HashSet<Arc<str>> = (0..100).map(|_| member_id(&client)).collect();
    assert_eq!(ids.len(), 100);
}

#[test]
fn only_a_new_revision_is_a_sign_of_life() {
    let stored = OffsetDateTime::UNIX_EPOCH;
    let mut last_seen = HashMap::new();
    let claim = |partitions: &[u16]| Claim {
        partitions: partitions.to_vec(),
        sticky: true,
    };
    heard(&mut last_seen, "a".to_owned(), 5, stored, claim(&[1]));
    let first = last_seen["a"].at;
    std::thread::sleep(Duration::from_millis(5));
    // The same heartbeat again (a watch started again): not a new sign of life.
    heard(&mut last_seen, "a".to_owned(), 5, stored, claim(&[1]));
    assert_eq!(last_seen["a"].at, first);
    assert!(!last_seen["a"].renewed);
    heard(&mut last_seen, "a".to_owned(), 9, stored, claim(&[2, 3]));
    assert!(last_seen["a"].at > first);
    assert_eq!(last_seen["a"].revision, 9);
    assert!(last_seen["a"].renewed);
    assert_eq!(last_seen["a"].claim, claim(&[2, 3]));
    // An older revision delivered late does not bring back what it held.
    heard(&mut last_seen, "a".to_owned(), 7, stored, claim(&[1]));
    assert_eq!(last_seen["a"].claim, claim(&[2, 3]));
}

#[test]
fn silence_counts_only_while_the_bucket_is_heard_from() {
    let timeout = Duration::from_secs(2);
    let gap = Duration::from_millis(800);
    let mut deliveries = Deliveries::new(timeout, gap);
    let start = deliveries.last;
    assert!(deliveries.steady(start));
    // Heard every 400 ms: steady.
    let mut now = start;
    for _ in 0..5 {
        now += gap / 2;
        deliveries.note(now);
    }
    assert!(deliveries.steady(now));
    // Nothing for longer than a gap: an outage, not steady.
    assert!(!deliveries.steady(now + gap + Duration::from_millis(1)));
    // Heard again after 6 s: steady only a session timeout later.
    now += Duration::from_secs(6);
    deliveries.note(now);
    assert!(!deliveries.steady(now));
    for _ in 0..5 {
        now += gap / 2;
        deliveries.note(now);
    }
    assert!(deliveries.steady(now));
}

#[test]
fn a_heartbeat_found_stored_is_aged_by_the_server_clock() {
    let timeout = Duration::from_secs(5);
    let server_now = OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1000);
    let own = Some(ServerTime {
        stored: server_now,
        received: Instant::now(),
    });
    let found = |age: time::Duration| Heard {
        revision: 1,
        at: Instant::now(),
        stored: server_now - age,
        renewed: false,
        claim: Claim {
            partitions: Vec::new(),
            sticky: true,
        },
    };
    assert!(found(time::Duration::seconds(1)).alive(timeout, own));
    assert!(!found(time::Duration::seconds(12)).alive(timeout, own));
    // Stored after this member's own latest heartbeat: fresh.
    assert!(found(time::Duration::seconds(-3)).alive(timeout, own));
    // Before this member's own heartbeat is back, or once renewed: the monotonic clock.
    assert!(found(time::Duration::seconds(12)).alive(timeout, None));
    let renewed = Heard {
        renewed: true,
        ..found(time::Duration::seconds(12))
    };
    assert!(renewed.alive(timeout, own));
}

fn heard_of(claims: &[(&str, &[u16], bool)]) -> HashMap<String, Heard> {
    let mut last_seen = HashMap::new();
    for (member, partitions, sticky) in claims {
        let claim = Claim {
            partitions: partitions.to_vec(),
            sticky: *sticky,
        };
        heard(
            &mut last_seen,
            (*member).to_owned(),
            1,
            OffsetDateTime::UNIX_EPOCH,
            claim,
        );
    }
    last_seen
}

#[test]
fn a_member_shares_by_what_the_heartbeats_hold() {
    // b holds 0..6, c 6..8; a, joining (its heartbeat not read yet), takes what b gives up.
    let held: Vec<u16> = (0..6).collect();
    let last_seen = heard_of(&[("b", &held, true), ("c", &[6, 7], true)]);
    let (members, mine) = share(8, &last_seen, "a", true);
    assert_eq!(
        members,
        vec![Arc::from("a"), Arc::from("b"), Arc::from("c")]
    );
    assert_eq!(mine, vec![3, 4, 5]);
    // Once a's first heartbeat is read, by every member: the same assignment.
    let last_seen = heard_of(&[("a", &[], true), ("b", &held, true), ("c", &[6, 7], true)]);
    assert_eq!(share(8, &last_seen, "a", true).1, vec![3, 4, 5]);
    assert_eq!(share(8, &last_seen, "b", true).1, vec![0, 1, 2]);
    assert_eq!(share(8, &last_seen, "c", true).1, vec![6, 7]);
    // Not heard back from itself: out of the group, nothing.
    let (members, mine) = share(8, &last_seen, "b", false);
    assert_eq!(members, vec![Arc::from("a"), Arc::from("c")]);
    assert!(mine.is_empty());
}

#[test]
fn a_live_member_of_an_earlier_version_holds_the_group_to_modulo() {
    let last_seen = heard_of(&[
        ("a", &[], true),
        ("b", &[1, 3], false),
        ("c", &[6, 7], true),
    ]);
    assert_eq!(share(8, &last_seen, "a", true).1, vec![0, 3, 6]);
    assert_eq!(share(8, &last_seen, "c", true).1, vec![2, 5]);
}

#[test]
fn a_heartbeat_says_what_its_member_holds_and_by_which_rule() {
    let heartbeat = Heartbeat {
        partitions: vec![4, 5],
        sticky: true,
        ..Heartbeat::default()
    };
    let value = serde_json::to_vec(&heartbeat).expect("serialises");
    let read = Claim::read(&value);
    assert_eq!(read.partitions, vec![4, 5]);
    assert!(read.sticky);
    // An earlier version's heartbeat: the group falls back to `p % n`.
    let earlier = br#"{"host":"h","pid":1,"partitions":[0,2],"pinned":[]}"#;
    assert_eq!(
        Claim::read(earlier),
        Claim {
            partitions: vec![0, 2],
            sticky: false
        }
    );
    // Not a heartbeat: holds nothing, and does not hold the group back.
    assert_eq!(
        Claim::read(b"not json"),
        Claim {
            partitions: Vec::new(),
            sticky: true
        }
    );
}
