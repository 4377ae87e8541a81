//! `canvas-migrate-keys`: moves a single Redis from the key layout before buckets to the bucketed one, keeping
//! every unsaved change. Run it once, with every gateway and saver stopped, before starting the new versions
//! (`docs/operating.md`, "Upgrading to the bucketed key layout").

use canvas_shared::hot::redis::migrate_to_buckets;
use clap::Parser;

/// Moves a single Redis to the bucketed key layout (run with every gateway and saver stopped).
#[derive(Parser, Debug)]
#[command(name = "canvas-migrate-keys")]
struct Args {
    /// The Redis to migrate.
    #[arg(
        long = "redis-url",
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let report = migrate_to_buckets(&args.redis_url).await?;
    println!(
        "moved {} projects ({} keys, {} index entries); dropped {} snapshot copies; {} projects made resident",
        report.projects, report.keys, report.index_entries, report.dropped, report.resident_added
    );
    Ok(())
}
