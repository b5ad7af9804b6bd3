use super::*;

fn at(text: &str) -> OffsetDateTime {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
}

fn state(attempts: u32, complete: bool, last: Option<&str>) -> DayState {
    DayState {
        day: "2026-12-05".into(),
        attempts,
        complete,
        last_attempt: last.map(at),
    }
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn a_day_is_due_at_the_nodes_point_in_the_window() {
    let run = Plan::Run {
        day: "2026-12-05".into(),
    };
    let fresh = DayState::default();
    assert_eq!(
        plan(at("2026-12-06T00:30:00Z"), HOUR, &fresh),
        Plan::WaitUntil(at("2026-12-06T01:00:00Z"))
    );
    assert_eq!(plan(at("2026-12-06T01:00:00Z"), HOUR, &fresh), run);
    // A start late in the day (a restart) catches up at once.
    assert_eq!(plan(at("2026-12-06T22:00:00Z"), HOUR, &fresh), run);
    // The state of an older day does not count.
    let old = DayState {
        day: "2026-12-04".into(),
        ..state(1, true, Some("2026-12-05T01:00:00Z"))
    };
    assert_eq!(plan(at("2026-12-06T02:00:00Z"), HOUR, &old), run);
}

#[test]
fn a_complete_day_waits_for_the_next() {
    assert_eq!(
        plan(
            at("2026-12-06T01:00:05Z"),
            HOUR,
            &state(1, true, Some("2026-12-06T01:00:01Z"))
        ),
        Plan::WaitUntil(at("2026-12-07T01:00:00Z"))
    );
}

#[test]
fn failures_are_retried_with_a_doubling_backoff_until_the_day_ends() {
    assert_eq!(backoff(1), Duration::from_secs(300));
    assert_eq!(backoff(2), Duration::from_secs(600));
    assert_eq!(backoff(3), Duration::from_secs(1200));
    assert_eq!(backoff(6), MAX_BACKOFF);
    assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    let failed_once = state(1, false, Some("2026-12-06T01:00:00Z"));
    assert_eq!(
        plan(at("2026-12-06T01:01:00Z"), HOUR, &failed_once),
        Plan::WaitUntil(at("2026-12-06T01:05:00Z"))
    );
    assert_eq!(
        plan(at("2026-12-06T01:05:00Z"), HOUR, &failed_once),
        Plan::Run {
            day: "2026-12-05".into()
        }
    );
    // The last retry of the day: the next would fall after midnight.
    let late = state(20, false, Some("2026-12-06T23:00:00Z"));
    assert_eq!(
        plan(at("2026-12-06T23:30:00Z"), HOUR, &late),
        Plan::WaitUntil(at("2026-12-07T01:00:00Z"))
    );
}

#[test]
fn nodes_take_different_points_within_the_spread() {
    let spread = 4 * HOUR;
    let a = offset_for("mx1.example.org", spread);
    let b = offset_for("mx2.example.org", spread);
    assert!(a < spread && b < spread);
    assert_ne!(a, b);
    assert_eq!(a, offset_for("mx1.example.org", spread));
    assert_eq!(
        offset_for("mx1.example.org", Duration::ZERO),
        Duration::ZERO
    );
}
