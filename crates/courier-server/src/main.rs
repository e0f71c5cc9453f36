//! `courier-server`: the Courier reference server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use courier_core::ChannelPattern;
use courier_server::Config;
use courier_server::auth::{Role, claims_for, sign_hs256};

#[derive(Parser)]
#[command(name = "courier-server", version, about = "Courier reference server")]
struct Cli {
    /// A TOML configuration file.
    #[arg(long, global = true, env = "COURIER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args, Default, Clone)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Switch on the fault-injection endpoints (loopback only).
    #[arg(long)]
    enable_fault_injection: bool,
    /// Allow the development JWT secret on a non-loopback address.
    #[arg(long)]
    allow_dev_secret: bool,
    /// Log format: human or json.
    #[arg(long)]
    log_format: Option<String>,
    /// Backend: `memory` (one instance), `redis` (several instances on one Redis as one) or
    /// `redis-cluster` (the same on a Redis Cluster).
    #[arg(long)]
    backend: Option<String>,
    /// Redis URL for `--backend redis`, e.g. redis://127.0.0.1:6379; for `redis-cluster`,
    /// one or more nodes, comma-separated.
    #[arg(long)]
    redis_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Print a signed HS256 token for the configured secret.
    Token {
        /// The subject (user or service id).
        #[arg(long)]
        sub: String,
        /// `user`, `service` or `admin` (the admin API and console at /admin).
        #[arg(long, default_value = "user")]
        role: String,
        /// Channel patterns granted for reading, comma-separated.
        #[arg(long, value_delimiter = ',')]
        channels: Vec<String>,
        /// Channel patterns granted for publishing (users), comma-separated.
        #[arg(long, value_delimiter = ',')]
        publish: Vec<String>,
        /// Rate-limit tier: one of `rate_limits.tiers` (default: standard, premium, service).
        #[arg(long)]
        tier: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Print the configuration reference (Markdown: every key, its `COURIER_*` variable,
    /// default and meaning); `docs/configuration.md` is this output.
    ConfigReference,
}

fn load(cli_config: Option<&PathBuf>, args: &ServeArgs) -> Result<Config, String> {
    let mut config = Config::load(cli_config.map(PathBuf::as_path), std::env::vars())
        .map_err(|e| e.to_string())?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if args.enable_fault_injection {
        config.enable_fault_injection = true;
    }
    if args.allow_dev_secret {
        config.allow_dev_secret = true;
    }
    if let Some(f) = &args.log_format {
        config.log_format = f.clone();
    }
    if let Some(b) = &args.backend {
        config.backend = match b.as_str() {
            "memory" => courier_server::config::Backend::Memory,
            "redis" => courier_server::config::Backend::Redis,
            "redis-cluster" => courier_server::config::Backend::RedisCluster,
            other => {
                return Err(format!(
                    "--backend must be memory, redis or redis-cluster, not `{other}`"
                ));
            }
        };
    }
    if let Some(u) = &args.redis_url {
        config.redis.url = u.clone();
    }
    Ok(config)
}

fn init_logs(config: &Config) {
    let spec = std::env::var("COURIER_LOG").unwrap_or_else(|_| config.log_level.clone());
    let filter = courier_server::logs::filter(&spec);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_format.eq_ignore_ascii_case("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn token(
    config: &Config,
    sub: String,
    role: &str,
    channels: Vec<String>,
    publish: Vec<String>,
    tier: Option<String>,
    ttl: u64,
) -> Result<String, String> {
    let Some(role) = Role::ALL.into_iter().find(|r| r.as_str() == role) else {
        return Err(format!(
            "--role must be user, service or admin, not `{role}`"
        ));
    };
    let patterns = |list: Vec<String>| -> Result<Vec<ChannelPattern>, String> {
        list.into_iter()
            .filter(|s| !s.is_empty())
            .map(|p| ChannelPattern::new(p).map_err(|e| e.to_string()))
            .collect()
    };
    let mut claims = claims_for(&sub, role, patterns(channels)?, ttl);
    claims.publish = patterns(publish)?;
    if let Some(t) = &tier {
        let known = &config.rate_limits.tiers;
        if !known.contains_key(t) {
            let names: Vec<&str> = known.keys().map(String::as_str).collect();
            return Err(format!(
                "--tier `{t}` is not one of the configured tiers ({}); add it to rate_limits.tiers first",
                names.join(", ")
            ));
        }
    }
    claims.tier = tier;
    Ok(sign_hs256(&config.auth.jwt_secret, &claims))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (args, token_cmd) = match cli.command {
        None => (cli.serve.clone(), None),
        Some(Command::Serve(a)) => (a, None),
        Some(t @ Command::Token { .. }) => (cli.serve.clone(), Some(t)),
        Some(Command::ConfigReference) => {
            // Needs no configuration: it documents the defaults.
            print!("{}", courier_server::config::reference_markdown());
            return ExitCode::SUCCESS;
        }
    };
    let config = match load(cli.config.as_ref(), &args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("courier-server: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Token {
        sub,
        role,
        channels,
        publish,
        tier,
        ttl,
    }) = token_cmd
    {
        return match token(&config, sub, &role, channels, publish, tier, ttl) {
            Ok(t) => {
                println!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("courier-server: {e}");
                ExitCode::from(2)
            }
        };
    }
    init_logs(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("courier-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        if let Err(e) = config.check_safety(config.listen) {
            return Err(e.to_string());
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        courier_server::serve(config, listener)
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("courier-server: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_refuses_a_tier_the_server_does_not_know() {
        let config = Config::default();
        let err = token(
            &config,
            "a".into(),
            "user",
            vec![],
            vec![],
            Some("gold".into()),
            60,
        )
        .unwrap_err();
        assert!(err.contains("gold") && err.contains("standard"), "{err}");
        assert!(
            token(
                &config,
                "a".into(),
                "user",
                vec![],
                vec![],
                Some("premium".into()),
                60
            )
            .is_ok()
        );
    }

    #[test]
    fn token_mints_the_admin_role() {
        let config = Config::default();
        let t = token(&config, "ops".into(), "admin", vec![], vec![], None, 60).unwrap();
        let verifier = courier_server::auth::Verifier::new(&config.auth, None).unwrap();
        assert_eq!(verifier.verify(&t).unwrap().role, Role::Admin);
        let err = token(&config, "ops".into(), "root", vec![], vec![], None, 60).unwrap_err();
        assert!(err.contains("admin"), "{err}");
    }
}
