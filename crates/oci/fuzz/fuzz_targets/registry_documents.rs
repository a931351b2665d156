//! What a registry sends before any layer (manifests, indexes, configs,
//! token answers, error bodies, `WWW-Authenticate` challenges) must never
//! panic b2c: PID 1 panicking is no status line and a machine that waits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    b2c_oci::fuzzing::registry_documents(data);
});
