//! Command line: parse arguments, call into the library, map failures to exit codes
//! (1: runtime failure, 2: usage or configuration error).
//!
//! Runtime failures (1) are what the system could not give a valid configuration: a port it
//! cannot bind, a certificate or key file it cannot read, a host name that does not resolve;
//! `policy` also exits 1 when the domain has no route. Configuration errors (2) are in the text
//! or in the content of the files it names (syntax, unknown keys, a key that does not match its
//! certificate). `check-config` answers valid (0) or invalid (2) whatever the kind of failure.

use clap::{Parser, Subcommand};
use starttls_proxy::cli::{coverage, evidence, tls_report};
use starttls_proxy::config::{Config, DEFAULT_PATH};
use starttls_proxy::{demo, log, server};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "TLS-terminating SMTP proxy: STARTTLS in front of plaintext MTAs"
)]
struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = log::Format::Text)]
    log_format: log::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy until SIGTERM/SIGINT; SIGHUP reloads the configuration.
    Run {
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate a configuration (and its certificates) without starting anything.
    CheckConfig {
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Self-contained demo on loopback: the proxy in front of a built-in recording MTA.
    Demo,
    /// Encryption coverage per partner domain and direction over the last N days, counted from
    /// the session results in state_directory.
    Coverage {
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
        /// The period: the last N×24 hours up to now.
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=3660))]
        days: u32,
        #[arg(long, value_enum, default_value_t = coverage::Format::Table)]
        format: coverage::Format,
    },
    /// One document for an auditor: TLS settings, enforced partners, coverage, failures,
    /// policy changes and partner certificate expiries over the last N days, from what the
    /// proxy keeps in state_directory.
    Evidence {
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
        /// The period: the last N×24 hours up to now.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3660))]
        days: u32,
        #[arg(long, value_enum, default_value_t = evidence::Format::Md)]
        format: evidence::Format,
    },
    /// Build a day's TLS reports (RFC 8460) from the session results of every node, store them
    /// under state_directory/reports/ and print a summary; --send delivers those a destination
    /// does not have yet. Exits 1 when a delivery failed.
    #[command(args_conflicts_with_subcommands = true)]
    TlsReport {
        #[command(subcommand)]
        action: Option<TlsReportAction>,
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
        /// UTC day, YYYY-MM-DD (default: yesterday; today gives the day so far).
        #[arg(long, value_parser = tls_report::parse_day)]
        day: Option<String>,
        /// Deliver the reports to their https: and mailto: destinations.
        #[arg(long, conflicts_with = "received")]
        send: bool,
        /// Summarise instead the reports partners sent us about that day (received on the
        /// inbound path or imported).
        #[arg(long)]
        received: bool,
    },
    /// Print the outbound route (MX hosts and addresses) and the TLS policy for DOMAIN, without
    /// sending mail. Exits 1 when the domain has no route (NXDOMAIN, null MX, DNS failure).
    Policy {
        /// Recipient domain, e.g. bank.example.
        domain: String,
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum TlsReportAction {
    /// Check and keep the TLS reports in PATH (a .json, .json.gz or e-mail file, a directory of
    /// them, or a maildir) with those received on the inbound path. Exits 1 if one was refused.
    Import {
        path: PathBuf,
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::init(cli.log_format);
    match cli.command {
        // The contract's check-config answer is binary: 0 valid, 2 not (whatever `run` would
        // make of the failure: an unreadable certificate is 1 there, a runtime failure).
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(config) => {
                print!("{}", config.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("starttls-proxy: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config: path } => {
            let config = match load(&path) {
                Ok(c) => c,
                Err(exit) => return exit,
            };
            runtime().block_on(async {
                match server::run(&path, config).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("starttls-proxy: {e}");
                        ExitCode::from(1)
                    }
                }
            })
        }
        Command::Policy { domain, config } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(exit) => return exit,
            };
            runtime().block_on(async {
                use starttls_proxy::cli::policy;
                use starttls_proxy::resolver::dnssec::{ResolveSecure, Validating};
                let resolver = starttls_proxy::resolver::build(&config.resolver);
                let validating = Validating::new(
                    &config.resolver.nameservers,
                    config.resolver.dnssec_trust_anchor.as_deref(),
                );
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let lower = domain.trim_end_matches('.').to_ascii_lowercase();
                let wants_dane = config.outbound_policy.lookup(&lower, now).mode.wants_dane();
                let (secure, why_not) = match &validating {
                    // The self-test costs a round trip: only when DANE would be consulted.
                    Ok(_) if !wants_dane => (None, None),
                    Ok(v) => match v.self_test().await {
                        Ok(()) => (Some(v as &dyn ResolveSecure), None),
                        Err(why) => (None, Some(why)),
                    },
                    Err(e) => (None, Some(e.to_string())),
                };
                let scratch = std::env::temp_dir()
                    .join(format!("starttls-proxy-policy-{}", std::process::id()));
                let sts = policy::sts_discovery(&config, &domain, &scratch);
                let lookups = policy::Lookups {
                    resolver: resolver.as_ref(),
                    secure,
                    why_not,
                    sts: sts.as_ref(),
                };
                let explained = policy::explain(&config, &lookups, &domain).await;
                let _ = std::fs::remove_dir_all(&scratch);
                print!("{}", explained.text);
                if explained.unreachable.is_empty() {
                    return ExitCode::SUCCESS;
                }
                for (listener, reply) in &explained.unreachable {
                    eprintln!(
                        "starttls-proxy: no route for {domain} via outbound {listener}: {reply}"
                    );
                }
                ExitCode::from(1)
            })
        }
        Command::Coverage {
            config,
            days,
            format,
        } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(exit) => return exit,
            };
            let rfc3339 = |t: time::OffsetDateTime| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            };
            let now = time::OffsetDateTime::now_utc();
            let since = rfc3339(now - time::Duration::days(i64::from(days)));
            let dir = config.state.results_dir();
            match coverage::compute(&dir, &since, &rfc3339(now)) {
                Ok(report) => {
                    print!("{}", report.render(format));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "starttls-proxy: cannot read session results in {}: {e}",
                        dir.display()
                    );
                    ExitCode::from(1)
                }
            }
        }
        Command::Evidence {
            config,
            days,
            format,
        } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(exit) => return exit,
            };
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            match evidence::build(&config, days, now) {
                Ok(document) => {
                    print!("{}", document.render(format));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "starttls-proxy: cannot read what the proxy keeps in {}: {e}",
                        config.state.directory.display()
                    );
                    ExitCode::from(1)
                }
            }
        }
        Command::TlsReport {
            action,
            config,
            day,
            send,
            received,
        } => {
            let path = match &action {
                Some(TlsReportAction::Import { config, .. }) => config,
                None => &config,
            };
            let config = match load(path) {
                Ok(c) => c,
                Err(exit) => return exit,
            };
            let exit = match action {
                Some(TlsReportAction::Import { path, .. }) => tls_report::import(&config, &path),
                None if received => tls_report::received_summary(&config, day),
                None => runtime().block_on(tls_report::run(&config, day, send)),
            };
            ExitCode::from(exit as u8)
        }
        Command::Demo => runtime().block_on(async {
            match demo::run().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("starttls-proxy demo: {e}");
                    ExitCode::from(1)
                }
            }
        }),
    }
}

/// The configuration at `path`, or the exit code after saying what is wrong (2 for a
/// configuration error, 1 for what only the running system can fail).
fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("starttls-proxy: {e}");
        ExitCode::from(e.exit_code())
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
