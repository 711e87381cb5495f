//! Writes the CustomResourceDefinitions to `crds/*.yaml` (or the directory given as argument).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    for (file, crd) in conda_store_crds::crds() {
        let path = dir.join(file);
        std::fs::write(&path, conda_store_crds::crd_yaml(&crd))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
