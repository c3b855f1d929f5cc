"""Reading images and datasets: exact pixels, crops and tiles, folders and manifests."""
