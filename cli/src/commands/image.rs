//! `agora image import|list`: the local OCI image store agents run images from.
//!
//! `import` takes an OCI image layout (a directory, or a tar of one such as
//! `skopeo copy docker://busybox oci-archive:busybox.tar:busybox` or Docker 25+'s
//! `docker save` writes), checks every blob against its digest and unpacks the
//! layers the store lacks. The store is the agent's `--image-store`; `agora dev`
//! uses `<data-dir>/images`.

use std::path::PathBuf;

use agora_agent::images::{ImageStore, ImageSummary};
use anyhow::Context;
use clap::{Args, Subcommand};

use crate::table;

/// The store directory agents use unless told otherwise.
pub const DEFAULT_STORE: &str = "/var/lib/agora/images";

#[derive(Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Import an OCI image layout (directory or tar) into the store.
    Import(ImportArgs),
    /// List the images in the store.
    List(ListArgs),
}

#[derive(Args)]
struct StoreArg {
    /// The image store directory (the agent's --image-store; `agora dev` uses
    /// <data-dir>/images).
    #[arg(long, env = "AGORA_IMAGE_STORE", default_value = DEFAULT_STORE)]
    store: PathBuf,
}

#[derive(Args)]
struct ImportArgs {
    /// An OCI image layout directory, or a tar (or .tar.gz) of one.
    source: PathBuf,
    /// The name to store the image under (default: the name the layout's index
    /// is annotated with, org.opencontainers.image.ref.name).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    store: StoreArg,
}

#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: ImageArgs) -> anyhow::Result<()> {
    // Unpacking is blocking file-system work.
    tokio::task::spawn_blocking(move || match args.command {
        ImageCommand::Import(args) => import(args),
        ImageCommand::List(args) => list(args),
    })
    .await
    .context("the image command stopped unexpectedly")?
}

fn open(store: &StoreArg) -> anyhow::Result<ImageStore> {
    Ok(ImageStore::open(&store.store)?)
}

fn import(args: ImportArgs) -> anyhow::Result<()> {
    let store = open(&args.store)?;
    let imported = store.import(&args.source, args.name.as_deref())?;
    let layers = imported.layer_digests.len();
    println!(
        "imported {} ({}): {layers} layer{}, {} unpacked, {} already in the store at {}",
        imported.name,
        imported.manifest_digest,
        if layers == 1 { "" } else { "s" },
        imported.unpacked_layers,
        layers - imported.unpacked_layers.min(layers),
        store.dir().display()
    );
    Ok(())
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    // Listing a store that was never created shows it empty rather than creating it.
    let images = if args.store.store.exists() {
        open(&args.store)?.list()?
    } else {
        Vec::new()
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&images)?);
        return Ok(());
    }
    print!("{}", render(&images));
    Ok(())
}

/// A digest shortened to what a person compares: `sha256:` and 12 hex digits.
fn short_digest(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

/// Bytes as B, KiB, MiB or GiB with one decimal.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn render(images: &[ImageSummary]) -> String {
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                short_digest(&i.manifest_digest).to_string(),
                i.layers.to_string(),
                human_size(i.size_bytes),
            ]
        })
        .collect();
    table::render(&["NAME", "MANIFEST", "LAYERS", "SIZE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 20), "3.0 MiB");
    }

    #[test]
    fn digests_are_shortened() {
        assert_eq!(
            short_digest("sha256:0123456789abcdef0123"),
            "sha256:0123456789ab"
        );
        assert_eq!(short_digest("odd"), "odd");
    }
}
