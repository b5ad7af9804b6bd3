use super::*;

fn temp_store(tag: &str) -> ReportStore {
    let dir = std::env::temp_dir().join(format!(
        "stp-reports-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    ReportStore::open(&dir).unwrap()
}

fn entry(rua: &str, result: Delivery) -> LedgerEntry {
    LedgerEntry {
        time: "2026-12-06T01:00:00Z".into(),
        node: "mx1".into(),
        rua: rua.into(),
        result,
        detail: None,
    }
}

const NAME: &str = "example.org!partner.example!1!2!id.json.gz";

#[test]
fn a_report_sent_somewhere_is_never_replaced_by_a_rebuild() {
    let store = temp_store("keep");
    assert_eq!(store.store(NAME, b"first").unwrap(), b"first");
    // Nothing went out yet: a rebuild with more results replaces it.
    assert_eq!(store.store(NAME, b"second").unwrap(), b"second");
    store
        .record(NAME, &entry("mailto:a@b.example", Delivery::Sent))
        .unwrap();
    assert_eq!(store.store(NAME, b"third").unwrap(), b"second");
    assert_eq!(std::fs::read(store.path(NAME)).unwrap(), b"second");
    assert_eq!(store.reports().unwrap(), vec![NAME.to_string()]);
}

#[test]
fn the_ledger_says_which_destinations_have_the_report() {
    let store = temp_store("ledger");
    let https = "https://r.example/report";
    store.record(NAME, &entry(https, Delivery::Failed)).unwrap();
    assert!(!store.is_delivered(NAME, https).unwrap());
    store.record(NAME, &entry(https, Delivery::Sent)).unwrap();
    assert!(store.is_delivered(NAME, https).unwrap());
    assert!(!store.is_delivered(NAME, "mailto:x@r.example").unwrap());
    assert_eq!(store.ledger(NAME).unwrap().len(), 2);
}

#[test]
fn a_line_torn_by_a_crash_neither_counts_nor_swallows_the_next() {
    let store = temp_store("torn");
    let path = store.dir().join("ledger").join(format!("{NAME}.jsonl"));
    std::fs::write(
        &path,
        b"{\"time\":\"2026-12-06T01:00:00Z\",\"node\":\"mx1\",\"ru",
    )
    .unwrap();
    store
        .record(NAME, &entry("mailto:a@b.example", Delivery::Sent))
        .unwrap();
    let ledger = store.ledger(NAME).unwrap();
    assert_eq!(ledger, vec![entry("mailto:a@b.example", Delivery::Sent)]);
}

#[test]
fn one_sender_at_a_time_holds_a_report() {
    let store = temp_store("lock");
    let held = store.lock(NAME, "mx1").unwrap().expect("free");
    assert!(store.lock(NAME, "mx2").unwrap().is_none());
    drop(held);
    assert!(store.lock(NAME, "mx2").unwrap().is_some());
}

#[test]
fn a_lock_left_by_a_dead_sender_is_taken_over() {
    let store = temp_store("stale");
    let path = store.dir().join("locks").join(format!("{NAME}.lock"));
    std::fs::write(&path, b"mx1 1\n").unwrap();
    let old = SystemTime::now() - LOCK_STALE_AFTER - Duration::from_secs(60);
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert!(store.lock(NAME, "mx2").unwrap().is_some());
}

#[test]
fn destination_days_say_per_report_day_whether_anything_went() {
    let store = temp_store("days");
    let day1 = "example.org!partner.example!100!199!a.json.gz";
    let day2 = "example.org!partner.example!200!299!b.json.gz";
    let https = "https://r.example/report";
    store.record(day1, &entry(https, Delivery::Failed)).unwrap();
    store.record(day1, &entry(https, Delivery::Sent)).unwrap();
    store.record(day2, &entry(https, Delivery::Failed)).unwrap();
    store.record(day2, &entry(https, Delivery::Failed)).unwrap();
    let days = store.destination_days().unwrap();
    assert_eq!(days[https], BTreeMap::from([(100, true), (200, false)]));
}

#[test]
fn pruning_removes_old_reports_with_their_ledgers() {
    let store = temp_store("prune");
    let old = "example.org!partner.example!100!199!a.json.gz";
    let new = "example.org!partner.example!200!299!b.json.gz";
    for name in [old, new] {
        store.store(name, b"r").unwrap();
        store
            .record(name, &entry("mailto:a@b.example", Delivery::Sent))
            .unwrap();
    }
    assert_eq!(store.prune(200).unwrap(), 1);
    assert_eq!(store.reports().unwrap(), vec![new.to_string()]);
    assert!(store.ledger(old).unwrap().is_empty());
    assert_eq!(store.ledger(new).unwrap().len(), 1);
}
