//! Listeners and their lifecycle: bind (socket2), accept, connection limits, reload, drain.

use crate::config::{Config, Inbound, Outbound};
use crate::https::HttpsClient;
use crate::inbound::{self, Observer};
use crate::metrics::{self, ListenerMetrics};
use crate::net::client::{self as net_client, Origin};
use crate::net::original_dst::Interception;
use crate::net::proxy_protocol::TrustedBalancers;
use crate::outbound::discover::{StsDiscovery, FETCH_TIMEOUT};
use crate::policy::mta_sts::MAX_POLICY_BYTES;
use crate::report::day::Reporting;
use crate::report::schedule::{Schedule, SystemClock};
use crate::session::Slot;
use crate::smtp::reply;
use crate::state::monitor::Monitor;
use crate::state::mta_sts::StsCache;
use crate::state::results::{ResultsError, ResultsLog};
use crate::{admin, log, outbound, resolver};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

const BACKLOG: i32 = 1024;

/// Start-up failures (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The session results cannot be kept (DESIGN: a clear error at start, never a stalled
    /// session).
    #[error(
        "{0} (state_directory must be a directory the proxy can write; systemd: StateDirectory=)"
    )]
    State(#[from] crate::state::results::ResultsError),
    /// `client_address = "transparent"` or `interception = "tproxy"` (`what`) without the
    /// capability IP_TRANSPARENT needs.
    #[error(
        "listener {listener}: {what} needs the CAP_NET_ADMIN capability (or CAP_NET_RAW) for transparent sockets (IP_TRANSPARENT): {error} (systemd: add CAP_NET_ADMIN to CapabilityBoundingSet= and AmbientCapabilities=; or run as root)"
    )]
    Capability {
        listener: String,
        what: &'static str,
        error: std::io::Error,
    },
    /// `listener`: the listener's name, or `admin`.
    #[error("listener {listener}: cannot listen on {addr}: {error}{}", bind_hint(.addr, .error))]
    Bind {
        listener: String,
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// The listeners `config` names that are not bound yet, bound now.
fn bind_new(
    inbound: &Listeners<inbound::Context>,
    outbound: &Listeners<outbound::Context>,
    config: &Config,
) -> Result<Fresh, ServerError> {
    let inbound_addrs: Vec<(SocketAddr, &str, bool)> = config
        .inbound
        .iter()
        .map(|l| {
            (
                l.listen,
                l.name.as_str(),
                l.interception == Interception::Tproxy,
            )
        })
        .collect();
    for listener in &config.inbound {
        if listener.client_address == crate::net::backend::ClientAddress::Transparent {
            for &backend in &listener.backend_addrs {
                crate::net::backend::check_transparent(backend).map_err(|error| {
                    ServerError::Capability {
                        listener: listener.name.clone(),
                        what: "client_address = \"transparent\"",
                        error,
                    }
                })?;
            }
        }
    }
    let outbound_addrs: Vec<(SocketAddr, &str, bool)> = config
        .outbound
        .iter()
        .map(|l| {
            (
                l.listen,
                l.name.as_str(),
                l.interception == Interception::Tproxy,
            )
        })
        .collect();
    Ok(Fresh {
        inbound: inbound.bind_missing(&inbound_addrs)?,
        outbound: outbound.bind_missing(&outbound_addrs)?,
    })
}

fn open_sts_cache(config: &Config) -> Result<Arc<StsCache>, ServerError> {
    let dir = config.state.mta_sts_dir();
    StsCache::open(&dir)
        .map(Arc::new)
        .map_err(|e| ServerError::State(ResultsError::Directory(dir, e)))
}

/// MTA-STS discovery for one configuration: its WebPKI anchors, the shared cache.
fn sts_discovery(config: &Config, cache: &Arc<StsCache>) -> Option<Arc<StsDiscovery>> {
    let policy = &config.outbound_policy;
    if !policy.mta_sts {
        return None;
    }
    let Some(webpki) = policy.mta_sts_anchors.webpki() else {
        log::warn("mta_sts_disabled")
            .field(
                "detail",
                format!("no usable CA in {}", policy.mta_sts_anchors.label),
            )
            .emit();
        return None;
    };
    let https = HttpsClient::new(webpki, FETCH_TIMEOUT, MAX_POLICY_BYTES);
    Some(Arc::new(StsDiscovery::new(cache.clone(), https, 443)))
}

/// The TLS reporting of `config` for the daily schedule (`None`: no `[tls_reporting]`).
fn reporting(config: &Config) -> Result<Option<Reporting>, ServerError> {
    let dir = config.state.directory.join("reports");
    Reporting::from_config(config, resolver::build(&config.resolver))
        .map_err(|e| ServerError::State(ResultsError::Directory(dir, e)))
}

fn open_results(config: &Config) -> Result<ResultsLog, ServerError> {
    Ok(ResultsLog::open(
        &config.state.results_dir(),
        &config.hostname,
        config.state.retention_days,
    )?)
}

/// What an administrator needs to know about a bind failure, where we can tell.
fn bind_hint(addr: &SocketAddr, error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => format!(
            ": port {} is below 1024 and needs the CAP_NET_BIND_SERVICE capability (the systemd \
             unit grants it with AmbientCapabilities=CAP_NET_BIND_SERVICE; or run as root), or \
             listen on a port of 1024 or above",
            addr.port()
        ),
        std::io::ErrorKind::AddrInUse => ": another process listens there".to_string(),
        std::io::ErrorKind::AddrNotAvailable => {
            ": no interface of this host has that address".to_string()
        }
        _ => String::new(),
    }
}

/// A running proxy: its listeners, and the means to reload and drain it.
pub struct Server {
    config: Arc<Config>,
    inbound: Listeners<inbound::Context>,
    outbound: Listeners<outbound::Context>,
    draining: watch::Sender<bool>,
    draining_flag: Arc<AtomicBool>,
    /// Each session holds a clone; when all are gone, the drain is over.
    sessions: mpsc::Sender<()>,
    sessions_done: mpsc::Receiver<()>,
    observer: Option<Observer>,
    admin: Option<(SocketAddr, JoinHandle<()>)>,
    /// The session results log; reopened by a reload that moves `state_directory`.
    results: ResultsLog,
    /// The MTA-STS cache, in `state_directory` too: kept across reloads.
    sts_cache: Arc<StsCache>,
    /// Partner certificates and MX TLS memory, in the `state_directory` of the start (a reload
    /// that moves it takes effect at restart: `/certificates` serves this one).
    monitor: Monitor,
    /// The DNSSEC availability self-test of the current configuration's validating resolver.
    dnssec_check: Option<JoinHandle<()>>,
    /// The proactive refresh of cached MTA-STS policies for the current configuration.
    sts_refresh: Option<JoinHandle<()>>,
    /// The daily TLS reports (RFC 8460); idle without `[tls_reporting]`.
    reports: Schedule,
}

/// Listeners bound for a configuration, not yet accepting.
struct Fresh {
    inbound: HashMap<SocketAddr, TcpListener>,
    outbound: HashMap<SocketAddr, TcpListener>,
}

/// What the accept loop needs from a listener's per-session context, whatever the direction.
trait SessionContext: Clone + Send + Sync + 'static {
    const DIRECTION: &'static str;
    fn listener_name(&self) -> &str;
    fn config(&self) -> &Config;
    fn metrics(&self) -> &ListenerMetrics;
    /// `proxy_protocol_from`: peers whose connections begin with a PROXY header.
    fn trusted_balancers(&self) -> &TrustedBalancers;
    fn run(self, stream: TcpStream, origin: Origin, slot: Slot) -> impl Future<Output = ()> + Send;
}

impl SessionContext for inbound::Context {
    const DIRECTION: &'static str = "inbound";
    fn listener_name(&self) -> &str {
        &self.listener.name
    }
    fn config(&self) -> &Config {
        &self.config
    }
    fn metrics(&self) -> &ListenerMetrics {
        &self.metrics
    }
    fn trusted_balancers(&self) -> &TrustedBalancers {
        &self.listener.proxy_protocol_from
    }
    fn run(self, stream: TcpStream, origin: Origin, slot: Slot) -> impl Future<Output = ()> + Send {
        inbound::run(self, stream, origin, slot)
    }
}

impl SessionContext for outbound::Context {
    const DIRECTION: &'static str = "outbound";
    fn listener_name(&self) -> &str {
        &self.listener.name
    }
    fn config(&self) -> &Config {
        &self.config
    }
    fn metrics(&self) -> &ListenerMetrics {
        &self.metrics
    }
    fn trusted_balancers(&self) -> &TrustedBalancers {
        &self.listener.proxy_protocol_from
    }
    fn run(self, stream: TcpStream, origin: Origin, slot: Slot) -> impl Future<Output = ()> + Send {
        outbound::run(self, stream, origin, slot)
    }
}

/// The bound listeners of one direction, by configured address.
struct Listeners<C> {
    bound: HashMap<SocketAddr, Listener<C>>,
}

struct Listener<C> {
    local_addr: SocketAddr,
    context: watch::Sender<C>,
    accept_task: JoinHandle<()>,
}

impl<C: SessionContext> Listeners<C> {
    fn new() -> Self {
        Self {
            bound: HashMap::new(),
        }
    }

    /// Binds the addresses not bound yet; nothing else changes, so a failure leaves all as is.
    /// `wanted`: address, listener name, and whether it takes intercepted connections
    /// (TPROXY: a transparent socket).
    fn bind_missing(
        &self,
        wanted: &[(SocketAddr, &str, bool)],
    ) -> Result<HashMap<SocketAddr, TcpListener>, ServerError> {
        let mut fresh = HashMap::new();
        for &(addr, name, intercepting) in wanted {
            if !self.bound.contains_key(&addr) {
                fresh.insert(addr, bind(addr, name, intercepting)?);
            }
        }
        Ok(fresh)
    }

    /// Stops listeners no longer wanted, hands kept ones their new context (for new sessions
    /// only) and starts the freshly bound ones.
    fn apply(
        &mut self,
        contexts: Vec<(SocketAddr, C)>,
        mut fresh: HashMap<SocketAddr, TcpListener>,
        sessions: &mpsc::Sender<()>,
    ) {
        self.bound.retain(|addr, listener| {
            let keep = contexts.iter().any(|(wanted, _)| wanted == addr);
            if !keep {
                listener.accept_task.abort();
                log::info("stopped_listening").field("addr", addr).emit();
            }
            keep
        });
        for (addr, context) in contexts {
            if let Some(listener) = self.bound.get(&addr) {
                listener.context.send_replace(context);
                continue;
            }
            let Some(socket) = fresh.remove(&addr) else {
                continue;
            };
            let local_addr = socket.local_addr().unwrap_or(addr);
            log::info("listening")
                .field("listener", context.listener_name())
                .field("direction", C::DIRECTION)
                .field("addr", local_addr)
                .emit();
            let (tx, rx) = watch::channel(context);
            let accept_task = tokio::spawn(accept_loop(socket, rx, sessions.clone()));
            self.bound.insert(
                addr,
                Listener {
                    local_addr,
                    context: tx,
                    accept_task,
                },
            );
        }
    }

    fn addrs_by_name(&self) -> HashMap<String, SocketAddr> {
        self.bound
            .values()
            .map(|l| (l.context.borrow().listener_name().to_string(), l.local_addr))
            .collect()
    }

    fn stop_accepting(&self) {
        for listener in self.bound.values() {
            listener.accept_task.abort();
        }
    }
}

impl Server {
    /// Binds everything the configuration names; nothing is accepted on a partial set.
    pub async fn start(config: Config, observer: Option<Observer>) -> Result<Server, ServerError> {
        // Two descriptors per session: take all the kernel allows us.
        if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
            log::warn("nofile_limit").field("error", e).emit();
        }
        let handle = metrics::install();
        let (draining, _) = watch::channel(false);
        let (sessions, sessions_done) = mpsc::channel(1);
        let draining_flag = Arc::new(AtomicBool::new(false));
        // Every address first: a port that cannot be had is the first thing to report.
        let inbound = Listeners::new();
        let outbound = Listeners::new();
        let config = Arc::new(config);
        let fresh = bind_new(&inbound, &outbound, &config)?;
        let monitor = Monitor::open(&config.state.directory);
        let admin = match &config.admin {
            Some(a) => {
                let fail = |error| ServerError::Bind {
                    listener: "admin".into(),
                    addr: a.listen,
                    error,
                };
                let listener = admin::bind(a.listen).await.map_err(fail)?;
                let addr = listener.local_addr().map_err(fail)?;
                Some((
                    addr,
                    tokio::spawn(admin::serve(
                        listener,
                        handle,
                        draining_flag.clone(),
                        monitor.inventory.clone(),
                    )),
                ))
            }
            None => None,
        };
        let results = open_results(&config)?;
        let sts_cache = open_sts_cache(&config)?;
        let reports = Schedule::start(reporting(&config)?, SystemClock);
        let mut server = Server {
            config: config.clone(),
            inbound,
            outbound,
            draining,
            draining_flag,
            sessions,
            sessions_done,
            observer,
            admin,
            results,
            sts_cache,
            monitor,
            dnssec_check: None,
            sts_refresh: None,
            reports,
        };
        server.activate(&config, fresh);
        config_loaded(&config, "start");
        server.monitor.publish_expiries(&config);
        log::info("ready")
            .field("config", config.source.display())
            .emit();
        Ok(server)
    }

    /// Where each inbound listener is bound, by name (tests bind port 0).
    pub fn inbound_addrs(&self) -> HashMap<String, SocketAddr> {
        self.inbound.addrs_by_name()
    }

    /// Where each outbound listener is bound, by name.
    pub fn outbound_addrs(&self) -> HashMap<String, SocketAddr> {
        self.outbound.addrs_by_name()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(addr, _)| *addr)
    }

    /// Applies a new configuration: sessions in progress keep the one they started with.
    pub async fn reload(&mut self, config: Config) -> Result<(), ServerError> {
        if config.admin.as_ref().map(|a| a.listen) != self.config.admin.as_ref().map(|a| a.listen) {
            log::warn("reload")
                .field("detail", "admin.listen changes take effect at restart")
                .emit();
        }
        let config = Arc::new(config);
        let fresh = bind_new(&self.inbound, &self.outbound, &config)?;
        if config.state != self.config.state {
            self.results = open_results(&config)?;
            self.sts_cache = open_sts_cache(&config)?;
            if config.state.directory != self.config.state.directory {
                log::warn("reload")
                    .field("detail", "the certificate inventory and MX TLS memory move to the new state_directory at restart")
                    .emit();
            }
        }
        let reporting = reporting(&config)?;
        self.activate(&config, fresh);
        self.reports.update(reporting);
        config_loaded(&config, "reload");
        log_policy_changes(&self.config, &config);
        self.monitor.publish_expiries(&config);
        self.config = config;
        Ok(())
    }

    /// Starts accepting on `fresh` (bound first, so a failure changed nothing), retunes kept
    /// listeners and stops removed ones.
    fn activate(&mut self, config: &Arc<Config>, fresh: Fresh) {
        let Fresh {
            inbound: fresh_inbound,
            outbound: fresh_outbound,
        } = fresh;
        let inbound_contexts = config
            .inbound
            .iter()
            .map(|entry| (entry.listen, self.inbound_context(config, entry)))
            .collect();
        self.inbound
            .apply(inbound_contexts, fresh_inbound, &self.sessions);
        // One resolver (and its cache) per configuration, only when something needs DNS.
        let outbound_contexts = match config.outbound.is_empty() {
            true => {
                for task in [self.sts_refresh.take(), self.dnssec_check.take()]
                    .into_iter()
                    .flatten()
                {
                    task.abort();
                }
                Vec::new()
            }
            false => {
                let resolver = resolver::build(&config.resolver);
                let sts = sts_discovery(config, &self.sts_cache);
                if let Some(refresh) = self.sts_refresh.take() {
                    refresh.abort();
                }
                self.sts_refresh = sts.clone().map(|sts| {
                    outbound::discover::spawn_refresh(
                        sts,
                        resolver.clone(),
                        outbound::discover::REFRESH_INTERVAL,
                    )
                });
                let secure = self.dane_resolver(config);
                config
                    .outbound
                    .iter()
                    .map(|entry| {
                        (
                            entry.listen,
                            self.outbound_context(
                                config,
                                entry,
                                resolver.clone(),
                                sts.clone(),
                                secure.clone(),
                            ),
                        )
                    })
                    .collect()
            }
        };
        self.outbound
            .apply(outbound_contexts, fresh_outbound, &self.sessions);

        if let Some(tls) = &config.tls {
            if tls.label == "self-signed" {
                log::warn("self_signed_certificate")
                    .field("subject", &tls.subject)
                    .field("detail", "serving a certificate generated at start; configure tls.certificate for production")
                    .emit();
            }
            if let Some(not_after) = tls.not_after {
                metrics::certificate_expiry(&tls.label, not_after);
            }
        }
    }

    fn inbound_context(&self, config: &Arc<Config>, entry: &Arc<Inbound>) -> inbound::Context {
        let metrics = ListenerMetrics::new(&entry.name, "inbound");
        metrics.register();
        if !entry.proxy_protocol_from.is_empty() {
            metrics::proxy_protocol_errors_register(&entry.name);
        }
        if entry.client_address == crate::net::backend::ClientAddress::Xclient {
            metrics::xclient_unavailable_register(&entry.name);
        }
        inbound::Context {
            config: config.clone(),
            listener: entry.clone(),
            metrics,
            draining: self.draining.subscribe(),
            observer: self.observer.clone(),
            results: self.results.clone(),
        }
    }

    fn outbound_context(
        &self,
        config: &Arc<Config>,
        entry: &Arc<Outbound>,
        resolver: Arc<dyn resolver::Resolve>,
        sts: Option<Arc<StsDiscovery>>,
        secure: Option<Arc<dyn resolver::dnssec::ResolveSecure>>,
    ) -> outbound::Context {
        let metrics = ListenerMetrics::new(&entry.name, "outbound");
        metrics.register();
        if !entry.proxy_protocol_from.is_empty() {
            metrics::proxy_protocol_errors_register(&entry.name);
        }
        outbound::Context {
            config: config.clone(),
            listener: entry.clone(),
            metrics,
            resolver,
            draining: self.draining.subscribe(),
            results: self.results.clone(),
            sts,
            monitor: self.monitor.clone(),
            secure,
        }
    }

    /// The validating resolver of this configuration, when a domain wants DANE, with its
    /// availability self-test running (the previous configuration's stops).
    fn dane_resolver(
        &mut self,
        config: &Config,
    ) -> Option<Arc<dyn resolver::dnssec::ResolveSecure>> {
        if let Some(check) = self.dnssec_check.take() {
            check.abort();
        }
        let policy = &config.outbound_policy;
        if !policy.default.wants_dane() && !policy.domains.iter().any(|d| d.mode.wants_dane()) {
            return None;
        }
        let validating = match resolver::dnssec::Validating::new(
            &config.resolver.nameservers,
            config.resolver.dnssec_trust_anchor.as_deref(),
        ) {
            Ok(v) => Arc::new(v),
            Err(e) => {
                metrics::dnssec_available(false);
                log::warn("dnssec_unavailable")
                    .field("error", &e)
                    .field("effect", "DANE unavailable: answers count as insecure")
                    .emit();
                return None;
            }
        };
        self.dnssec_check = Some(resolver::dnssec::spawn_availability_check(
            validating.clone(),
            resolver::dnssec::AVAILABILITY_INTERVAL,
        ));
        Some(validating)
    }

    /// Stops accepting, tells sessions in a dialogue to say 421 and close, and waits for the
    /// rest up to `shutdown_grace`. Returns how many sessions were cut off.
    pub async fn shutdown(self) -> usize {
        self.draining_flag.store(true, Ordering::Relaxed);
        let _ = self.draining.send(true);
        self.inbound.stop_accepting();
        self.outbound.stop_accepting();
        let grace = self.config.shutdown_grace;
        log::info("draining")
            .field("grace_ms", grace.as_millis())
            .emit();
        let Server {
            sessions,
            mut sessions_done,
            monitor,
            ..
        } = self;
        let weak = sessions.downgrade();
        drop(sessions);
        let cut = match tokio::time::timeout(grace, sessions_done.recv()).await {
            Ok(_) => 0,
            Err(_) => weak.strong_count(),
        };
        // Last-seen times not yet written (they are written at most once a minute).
        let _ = tokio::task::spawn_blocking(move || monitor.flush()).await;
        cut
    }
}

/// The change-control record of the configuration now in force: log line, metrics and the
/// configuration history in `state_directory` (`reason`: `start` or `reload`).
fn config_loaded(config: &Config, reason: &str) {
    metrics::config_loaded();
    log::info("config_loaded")
        .field("config", config.source.display())
        .field("sha256", &config.sha256)
        .emit();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let record = crate::state::config_history::ConfigRecord::of(config, reason, now);
    if let Err(e) = crate::state::config_history::append(&config.state.directory, &record) {
        metrics::state_file_error("config_history", "write");
        log::warn("state_file_write_failed")
            .field(
                "file",
                config
                    .state
                    .directory
                    .join(crate::state::config_history::FILE_NAME)
                    .display(),
            )
            .field("error", e)
            .field(
                "detail",
                "this load is missing from the configuration history",
            )
            .emit();
    }
}

/// Change control: one line per outbound policy entry a reload changed (mode or relaxation).
fn log_policy_changes(old: &Config, new: &Config) {
    let mode = |m: Option<crate::policy::Mode>| m.map_or("-", |m| m.as_str());
    let until = |t: Option<i64>| t.map_or("-".to_string(), log::format_unix);
    for change in new.outbound_policy.changes_from(&old.outbound_policy) {
        log::warn("policy_changed")
            .field("domain", &change.domain)
            .field("from", mode(change.from))
            .field("to", mode(change.to))
            .field("relax_until_from", until(change.relax_from))
            .field("relax_until_to", until(change.relax_to))
            .field("config", new.source.display())
            .emit();
    }
}

fn bind(addr: SocketAddr, listener: &str, intercepting: bool) -> Result<TcpListener, ServerError> {
    let fail = |error| ServerError::Bind {
        listener: listener.to_string(),
        addr,
        error,
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    if intercepting {
        // TPROXY hands over connections addressed to other hosts only to a transparent socket.
        socket
            .set_ip_transparent(true)
            .map_err(|error| ServerError::Capability {
                listener: listener.to_string(),
                what: "interception = \"tproxy\"",
                error,
            })?;
    }
    socket.set_reuse_address(true).map_err(fail)?;
    socket.set_nodelay(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(BACKLOG).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    TcpListener::from_std(socket.into()).map_err(fail)
}

async fn accept_loop<C: SessionContext>(
    listener: TcpListener,
    context: watch::Receiver<C>,
    sessions: mpsc::Sender<()>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the backlog holds clients.
                log::warn("accept_failed").field("error", e).emit();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = context.borrow().clone();
        let metrics = ctx.metrics().clone();
        metrics.connection_opened();
        let limits = &ctx.config().limits;
        if active.load(Ordering::Relaxed) >= limits.max_connections {
            metrics.session_error("connection_limit");
            metrics.connection_closed();
            log::warn("connection_limit")
                .field("listener", ctx.listener_name())
                .field("direction", C::DIRECTION)
                .field("peer", peer)
                .field("max_connections", limits.max_connections)
                .emit();
            let refusal = reply::too_many_connections(&ctx.config().hostname).to_bytes();
            tokio::spawn(turn_away(stream, refusal));
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let held = active.clone();
        let slot = Slot::new(move || {
            held.fetch_sub(1, Ordering::Relaxed);
            metrics.connection_closed();
        });
        // Held until the task ends, log line included: the drain waits for it.
        let drain = sessions.clone();
        tokio::spawn(async move {
            if let Some((stream, origin)) = identify(&ctx, stream, peer).await {
                ctx.run(stream, origin, slot).await;
            }
            drop(drain);
        });
    }
}

/// Who the connection speaks for; `None`: a trusted balancer's PROXY header was missing or
/// bad, and the connection is closed without a reply (DESIGN: the client's address), counted
/// and logged.
async fn identify<C: SessionContext>(
    ctx: &C,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> Option<(TcpStream, Origin)> {
    let timeout = ctx.config().limits.handshake_timeout;
    match net_client::identify(&mut stream, peer, ctx.trusted_balancers(), timeout).await {
        Ok(origin) => Some((stream, origin)),
        Err(rejected) => {
            metrics::proxy_protocol_error(ctx.listener_name(), rejected.reason());
            log::warn("proxy_protocol_error")
                .field("listener", ctx.listener_name())
                .field("direction", C::DIRECTION)
                .field("peer", net_client::canonical(peer))
                .field("reason", rejected.reason())
                .field("detail", &rejected)
                .emit();
            None
        }
    }
}

async fn turn_away(mut stream: TcpStream, reply: Vec<u8>) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(&reply).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// `run`: serve until SIGTERM/SIGINT, reloading on SIGHUP.
pub async fn run(path: &Path, config: Config) -> Result<(), ServerError> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: a signal sent the moment `ready` is logged must not hit the default action.
    let (mut hup, mut term, mut int) = (
        signal(SignalKind::hangup()).expect("signal handler"),
        signal(SignalKind::terminate()).expect("signal handler"),
        signal(SignalKind::interrupt()).expect("signal handler"),
    );
    let mut server = Server::start(config, None).await?;
    notify_systemd("READY=1");
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&mut server, path).await,
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    notify_systemd("STOPPING=1");
    let cut = server.shutdown().await;
    log::info("stopped").field("sessions_cut", cut).emit();
    Ok(())
}

async fn reload(server: &mut Server, path: &Path) {
    notify_systemd("RELOADING=1");
    // Reading certificates and resolving host names block: keep them off the workers.
    let owned = path.to_owned();
    let loaded = tokio::task::spawn_blocking(move || Config::load(&owned)).await;
    let result = match loaded {
        Ok(Ok(config)) => server.reload(config).await.map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("configuration loader failed: {e}")),
    };
    metrics::config_reload(result.is_ok());
    match result {
        Ok(()) => log::info("reloaded").field("config", path.display()).emit(),
        Err(e) => log::error("reload_failed")
            .field("error", e)
            .field("detail", "old configuration kept")
            .emit(),
    }
    notify_systemd("READY=1");
}

/// sd_notify(3) without libsystemd: one datagram to `$NOTIFY_SOCKET`, if systemd gave one.
fn notify_systemd(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET").map(PathBuf::from) else {
        return;
    };
    let addr = match path.to_str().and_then(|p| p.strip_prefix('@')) {
        Some(abstract_name) => UnixAddr::from_abstract_name(abstract_name.as_bytes()),
        None => UnixAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|addr| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr));
    if let Err(e) = sent {
        log::warn("sd_notify").field("error", e).emit();
    }
}
