use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::args::{Format, ImageCommand};
use crate::client::Client;
use crate::output::outln;

/// The largest tarball a node accepts (its API says the same).
const MAX_IMAGE_BYTES: u64 = 2 << 30;

pub(crate) fn run(client: &Client, format: Format, command: ImageCommand) -> Result<()> {
    match command {
        ImageCommand::Load { file } => {
            let opened = std::fs::File::open(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let size = opened
                .metadata()
                .with_context(|| format!("cannot read {}", file.display()))?
                .len();
            if size > MAX_IMAGE_BYTES {
                bail!(
                    "{} is {size} bytes; a node takes image tarballs of at most 2 GiB",
                    file.display()
                );
            }
            let answer = client.post_file("/v1/images/load", opened)?;
            match format {
                Format::Json => outln!("{answer}")?,
                Format::Table => {
                    let node = answer.get("node").and_then(Value::as_str).unwrap_or("");
                    let loaded = answer
                        .get("loaded")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    if loaded.is_empty() {
                        outln!("{} loaded on {node}", file.display())?;
                    }
                    for line in loaded {
                        outln!("{} (on {node})", line.as_str().unwrap_or(""))?;
                    }
                }
            }
        }
    }
    Ok(())
}
