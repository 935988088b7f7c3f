//! Layer tarballs unpacked into a snapshot: whatever the bytes, no panic, and nothing is
//! ever created beside the snapshot directory.
#![no_main]

use kiln_runtime::unpack::{unpack, Devices, Options, Whiteouts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(area) = tempfile::tempdir() else { return };
    let root = area.path().join("snapshot");
    if std::fs::create_dir(&root).is_err() {
        return;
    }
    let options = Options {
        whiteouts: Whiteouts::Merge,
        devices: Devices::Skip,
        same_owner: false,
    };
    let _ = unpack(&root, data, &options);
    let beside = std::fs::read_dir(area.path())
        .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.file_name() != "snapshot").count())
        .unwrap_or(0);
    assert_eq!(beside, 0, "a layer wrote outside its snapshot");
});
