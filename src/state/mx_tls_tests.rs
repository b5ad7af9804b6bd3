use super::*;

fn dir(tag: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("starttls-proxy-mxtls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const T0: i64 = 1_790_000_000;
const DAY: i64 = 86_400;
const WINDOW: Duration = Duration::from_secs(30 * 86_400);

#[test]
fn starttls_gone_within_the_window_is_suspect_once_per_session() {
    let m = MxTlsMemory::open(&dir("gone"));
    assert_eq!(
        m.observe("mx", Shown::Starttls(Some("TLSv1.3")), "s1", T0, WINDOW),
        None
    );
    assert_eq!(
        m.observe("mx", Shown::NoStarttls, "s2", T0 + DAY, WINDOW),
        Some(Suspicion::StarttlsGone { offered_at: T0 })
    );
    // The same session judging another domain on the same connection counts once.
    assert_eq!(
        m.observe("mx", Shown::NoStarttls, "s2", T0 + DAY, WINDOW),
        None
    );
    // Every later session counts while the window holds.
    assert!(m
        .observe("mx", Shown::NoStarttls, "s3", T0 + 2 * DAY, WINDOW)
        .is_some());
    // Past the window the host is plaintext now, not suspect.
    assert_eq!(
        m.observe("mx", Shown::NoStarttls, "s4", T0 + 31 * DAY, WINDOW),
        None
    );
}

#[test]
fn a_host_never_seen_with_starttls_is_not_suspect() {
    let m = MxTlsMemory::open(&dir("never"));
    assert_eq!(m.observe("mx", Shown::NoStarttls, "s1", T0, WINDOW), None);
    assert_eq!(
        m.observe("mx", Shown::NoStarttls, "s2", T0 + 1, WINDOW),
        None
    );
}

#[test]
fn an_older_version_than_seen_within_the_window_is_suspect() {
    let m = MxTlsMemory::open(&dir("older"));
    m.observe("mx", Shown::Starttls(Some("TLSv1.3")), "s1", T0, WINDOW);
    assert_eq!(
        m.observe(
            "mx",
            Shown::Starttls(Some("TLSv1.2")),
            "s2",
            T0 + DAY,
            WINDOW
        ),
        Some(Suspicion::OlderVersion {
            before: "TLSv1.3".into(),
            now: "TLSv1.2".into()
        })
    );
    // A failed handshake reached no version: not a version drop.
    assert_eq!(
        m.observe("mx", Shown::Starttls(None), "s3", T0 + DAY, WINDOW),
        None
    );
    // Past the window the older version becomes the host's own.
    assert_eq!(
        m.observe(
            "mx",
            Shown::Starttls(Some("TLSv1.2")),
            "s4",
            T0 + 40 * DAY,
            WINDOW
        ),
        None
    );
    assert_eq!(
        m.host("mx").unwrap().best_version.as_deref(),
        Some("TLSv1.2")
    );
}

#[test]
fn the_memory_survives_a_restart_and_a_corrupt_file_starts_it_anew() {
    let d = dir("restart");
    {
        let m = MxTlsMemory::open(&d);
        m.observe("mx", Shown::Starttls(Some("TLSv1.3")), "s1", T0, WINDOW);
        m.flush();
    }
    let m = MxTlsMemory::open(&d);
    assert!(m
        .observe("mx", Shown::NoStarttls, "s2", T0 + 1, WINDOW)
        .is_some());
    std::fs::write(d.join(FILE_NAME), b"[{\"mx\": 12").unwrap();
    let m = MxTlsMemory::open(&d);
    assert_eq!(m.host("mx"), None);
    assert_eq!(
        m.observe("mx", Shown::NoStarttls, "s3", T0 + 2, WINDOW),
        None
    );
}
