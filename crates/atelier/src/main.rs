//! `atelier`: the one binary. `serve` runs web + worker + sweeper + mailer;
//! `worker` runs only the background parts; `migrate` prepares the database.

mod config;
mod ops;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use config::{Config, Flags};
use engines::{Paced, ProceduralEngine};
use store::Store;
use tokio::sync::watch;
use worker::{TaskHub, Worker, WorkerConfig};

#[derive(Parser)]
#[command(name = "atelier", version, about = "Self-hostable AI image generation and editing")]
struct Cli {
    /// Configuration file (default: ./atelier.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory (database, objects, mail).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://…
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the web app and API; also runs the worker unless --no-worker.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free one).
        #[arg(long)]
        bind: Option<String>,
        /// Web only: leave tasks to `atelier worker` processes.
        #[arg(long)]
        no_worker: bool,
    },
    /// Run tasks, sweeps and mail delivery without serving HTTP.
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Write a consistent database snapshot and an object manifest to DIR.
    Backup { dir: PathBuf },
    /// Restore a backup from DIR (stop the server first); accounts purged
    /// since the backup stay purged.
    Restore { dir: PathBuf },
    /// Re-wrap every account key under a new master key.
    RotateMasterKey,
    /// Run the retention sweeps once (for cron) and print what each removed.
    Sweep {
        /// Print the counts as one JSON object instead of a line per kind.
        #[arg(long)]
        json: bool,
    },
    /// Administration.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Purge an account now: rows, objects and data key (by email or id).
    PurgeAccount { account: String },
    /// Give an account a role: user, moderator or admin.
    SetRole { account: String, role: String },
    /// Create a signed-up, verified account; the password is read from the
    /// first line of standard input.
    CreateUser {
        email: String,
        #[arg(long, default_value = "Administrator")]
        name: String,
        #[arg(long, default_value = "user")]
        role: String,
    },
    /// Print the audit trail as JSON lines, newest first.
    Audit {
        /// Only entries where this account (email or id) acted or was acted on.
        #[arg(long)]
        account: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (command, bind) = match cli.command {
        Some(Command::Serve { bind, no_worker }) => (Mode::Serve { with_worker: !no_worker }, bind),
        None => (Mode::Serve { with_worker: true }, None),
        Some(Command::Worker) => (Mode::Worker, None),
        Some(other) => (Mode::Once(other), None),
    };
    let flags = Flags { data_dir: cli.data_dir, bind, database_url: cli.database_url, json_logs: cli.json_logs };
    // The file may also be named by ATELIER_CONFIG (containers, tests).
    let config_file = cli.config.or_else(|| std::env::var_os("ATELIER_CONFIG").map(PathBuf::from));
    let config = match Config::load(config_file.as_deref(), std::env::vars(), &flags) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("atelier: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(config, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("atelier: {e}");
            ExitCode::FAILURE
        }
    }
}

enum Mode {
    Serve {
        with_worker: bool,
    },
    Worker,
    /// A command that runs and exits.
    Once(Command),
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{},sqlx=warn", config.log.level)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if config.log.json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Finds an account by id or email.
async fn account_id(store: &Store, account: &str) -> Result<String, String> {
    let user = if domain::ids::is_valid_id(account) {
        store.user_by_id(account).await
    } else {
        store.user_by_email(&account.to_lowercase()).await
    };
    user.map_err(|e| e.to_string())?.map(|u| u.id).ok_or_else(|| format!("no account {account}"))
}

async fn run_once(config: &Config, command: Command) -> Result<(), String> {
    if let Command::Restore { dir } = &command {
        let report = ops::restore(config, dir).await?;
        println!("restored; accounts purged again: {}; objects listed but missing: {}", report.purged_again, report.objects_missing);
        return Ok(());
    }
    if let Command::RotateMasterKey = command {
        println!("{}", ops::rotate_master_key(config).await?);
        return Ok(());
    }
    let data = ops::open(config).await?;
    match command {
        Command::Migrate => println!("database migrated"),
        Command::Sweep { json } => {
            config.privacy.validate()?;
            let report = privacy::sweep::run_sweeps(&data.store, data.objects.as_ref(), &config.privacy, store::now_ms())
                .await
                .map_err(|e| e.to_string())?;
            let counts = serde_json::to_value(&report).map_err(|e| e.to_string())?;
            if json {
                println!("{counts}");
            } else if let Some(counts) = counts.as_object() {
                for (kind, n) in counts {
                    println!("{kind}: {n}");
                }
            }
        }
        Command::Backup { dir } => {
            let manifest = ops::backup(config, &data, &dir).await?;
            println!("backup written to {} ({} objects listed)", dir.display(), manifest.objects.len());
        }
        Command::Admin(AdminCommand::PurgeAccount { account }) => {
            let id = account_id(&data.store, &account).await?;
            let report = privacy::purge_account(&data.store, data.objects.as_ref(), &id, None).await.map_err(|e| e.to_string())?;
            println!("purged: {} objects deleted", report.objects_deleted);
        }
        Command::Admin(AdminCommand::SetRole { account, role }) => {
            let id = account_id(&data.store, &account).await?;
            data.store.set_role(&id, &role).await.map_err(|e| e.to_string())?;
            data.store
                .audit(store::AuditEntry { action: "role_changed", target_id: Some(&id), detail: Some(&role), ..Default::default() })
                .await
                .map_err(|e| e.to_string())?;
            println!("{account} is now {role}");
        }
        Command::Admin(AdminCommand::CreateUser { email, name, role }) => {
            let user = ops::create_user(&data.store, &email, &name, &role).await?;
            println!("created {role} {} ({})", user.email, user.id);
        }
        Command::Admin(AdminCommand::Audit { account, limit }) => {
            let id = match account {
                Some(account) => Some(account_id(&data.store, &account).await?),
                None => None,
            };
            let page = data.store.audit_entries(id.as_deref(), None, limit.clamp(1, 10_000)).await.map_err(|e| e.to_string())?;
            for entry in page.items {
                println!("{}", serde_json::to_string(&entry).map_err(|e| e.to_string())?);
            }
        }
        Command::Serve { .. } | Command::Worker | Command::Restore { .. } | Command::RotateMasterKey => unreachable!("handled above"),
    }
    data.store.close().await;
    Ok(())
}

async fn run(config: Config, mode: Mode) -> Result<(), String> {
    let mode = match mode {
        Mode::Once(command) => return run_once(&config, command).await,
        other => other,
    };
    config.billing.validate()?;
    config.privacy.validate()?;
    let ops::DataDir { store, blobs, objects } = ops::open(&config).await?;
    let builtin: Arc<dyn engines::Engine> =
        Arc::new(Paced { inner: ProceduralEngine, min: Duration::from_millis(config.engine.min_duration_ms) });
    let router =
        Arc::new(engines::build_router(&config.engine.providers, &config.engine.routes, builtin.clone(), &|k| std::env::var(k).ok())?);
    let (stop, stopped) = watch::channel(false);
    // On PostgreSQL, task events and wake-ups also reach the other nodes.
    let hub = worker::fanout::connect(&store, TaskHub::default(), stopped.clone()).await;
    let grace = Duration::from_secs(u64::from(config.tasks.shutdown_grace_seconds));
    let mut background = Vec::new();

    let with_worker = matches!(mode, Mode::Worker | Mode::Serve { with_worker: true });
    if with_worker {
        let tasks = &config.tasks;
        let worker = Arc::new(Worker::with_router(
            store.clone(),
            blobs.clone(),
            router.clone(),
            hub.clone(),
            WorkerConfig {
                lease_ms: i64::from(tasks.lease_seconds) * 1000,
                heartbeat_ms: u64::from(tasks.heartbeat_seconds) * 1000,
                concurrency: tasks.concurrency as usize,
                unsaved_retention_ms: i64::from(tasks.unsaved_retention_days) * 86_400_000,
                thumbnail_side: config.imaging.thumbnail_side.max(16),
                decode_limits: config.imaging.decode_limits(),
                drain_ms: grace.as_millis() as u64,
                end_user_secret: config.engine.end_user_secret(),
                ..WorkerConfig::default()
            },
        ));
        background.push(tokio::spawn(worker.run(stopped.clone())));
        background.push(tokio::spawn(worker::run_sweeper(
            store.clone(),
            hub.clone(),
            Duration::from_secs(u64::from(tasks.sweep_interval_seconds.max(1))),
            stopped.clone(),
        )));
        let every = Duration::from_secs(u64::from(config.privacy.sweep_interval_minutes.max(1)) * 60);
        background.push(tokio::spawn(privacy::sweep::run_scheduled(
            store.clone(),
            objects.clone(),
            config.privacy.clone(),
            every,
            stopped.clone(),
        )));
        let mailer = Arc::new(mailer::Mailer::new(&config.mail, config.data_dir.join("mail")).map_err(|e| e.to_string())?);
        let every = Duration::from_secs(u64::from(config.mail.send_interval_seconds.max(1)));
        background.push(tokio::spawn(mailer::run(mailer, store.clone(), stopped.clone(), every)));
        // Event links need the public URL; set `server.public_url` when the
        // bind address is not where people reach this instance.
        let bound = config.server.bind.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
        let deliverer = Arc::new(web::hooks::Deliverer::new(store.clone(), config.webhooks.web(), config.public_url(bound)));
        let every = Duration::from_secs(u64::from(config.webhooks.deliver_interval_seconds.max(1)));
        background.push(tokio::spawn(web::hooks::delivery::run(deliverer, every, stopped.clone())));
        if config.billing.enabled {
            let every = Duration::from_secs(u64::from(tasks.sweep_interval_seconds.max(1)));
            background.push(tokio::spawn(billing::run_sweeper(store.clone(), every, stopped.clone())));
        }
    }

    match mode {
        Mode::Serve { .. } => {
            let server = serve(&config, store.clone(), blobs, objects, hub, &builtin, &router);
            // Open event streams would hold a graceful shutdown forever.
            tokio::select! {
                served = server => served?,
                _ = async { shutdown_signal().await; tokio::time::sleep(grace).await } => {}
            }
        }
        _ => {
            println!("Atelier worker running (data in {})", config.data_dir.display());
            shutdown_signal().await;
        }
    }
    // Stop claiming; running tasks finish or are released within the grace.
    tracing::info!("shutting down");
    let _ = stop.send(true);
    let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(10);
    for task in background {
        let _ = tokio::time::timeout_at(deadline, task).await;
    }
    store.close().await;
    Ok(())
}

async fn serve(
    config: &Config,
    store: Store,
    blobs: Arc<dyn blobs::BlobStore>,
    objects: Arc<dyn blobs::BlobStore>,
    hub: TaskHub,
    builtin: &Arc<dyn engines::Engine>,
    router: &Arc<engines::Router>,
) -> Result<(), String> {
    // Native submits without a model take the built-in one when it serves
    // any model name, else the first routed model.
    let (provider, model) = match router.models().first() {
        Some(first) if !router.serves_any_model() => (router.route(first).join(","), first.clone()),
        _ => (builtin.name().to_string(), builtin.model().to_string()),
    };
    let mut models: Vec<(String, Vec<String>)> = router
        .models()
        .into_iter()
        .map(|m| {
            let providers = router.route(&m);
            (m, providers)
        })
        .collect();
    if router.serves_any_model() {
        models.push((engines::ANY_MODEL.to_string(), router.route(engines::ANY_MODEL)));
    }
    let auth = config.web_auth()?;
    let listener =
        tokio::net::TcpListener::bind(&config.server.bind).await.map_err(|e| format!("cannot listen on {}: {e}", config.server.bind))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let shown = if addr.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr };
    let web_config = web::WebConfig {
        public_url: config.public_url(shown),
        auth,
        moderation: config.web_moderation()?,
        rate_limits: config.rate_limits.web(),
        trusted_proxies: config.trusted_proxies()?,
        first_sign_up_is_admin: config.accounts.first_sign_up_is_admin,
        https: config.server.https,
        session_ttl_ms: i64::from(config.accounts.session_days) * 86_400_000,
        limits: domain::params::Limits {
            prompt_max_chars: config.limits.prompt_max_chars as usize,
            max_n: config.limits.max_images_per_task,
        },
        min_age: config.accounts.min_age,
        max_attempts: i64::from(config.tasks.max_attempts.max(1)),
        body_limit_bytes: config.server.body_limit_bytes as usize,
        provider,
        model,
        models,
        billing: config.billing.clone(),
        decode_limits: config.imaging.decode_limits(),
        thumbnail_side: config.imaging.thumbnail_side.max(16),
        privacy: config.privacy.clone(),
        unsaved_retention_days: config.tasks.unsaved_retention_days,
        smtp_host: config.mail.smtp_host.trim().to_string(),
        hooks: config.webhooks.web(),
        ..web::WebConfig::default()
    };
    let app = web::router(web::AppState { store, blobs, objects, hub, engines: router.clone(), config: Arc::new(web_config) });
    println!("Atelier is running at http://{shown}/");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
