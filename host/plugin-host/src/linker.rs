//! The linker of each plugin kind: our own imports, and the sandboxed WASI each kind may
//! see (what [`crate::kind::ALLOWED_IMPORTS`] lists: nothing real; providers reach the
//! network only through the wasi:http fence).

use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

use super::sandbox::CallState;
use super::wit;

/// One linker per plugin kind, built once with the engine.
pub(crate) struct Linkers {
    pub strategy: Linker<CallState>,
    pub generator: Linker<CallState>,
    pub provider: Linker<CallState>,
}

impl Linkers {
    pub fn new(engine: &Engine) -> wasmtime::Result<Self> {
        let mut strategy = Linker::new(engine);
        wit::strategy::Strategy::add_to_linker::<CallState, HasSelf<CallState>>(
            &mut strategy,
            |state| state,
        )?;
        sandboxed_wasi::add_to_linker(&mut strategy)?;

        let mut generator = Linker::new(engine);
        wit::generator::ScriptGenerator::add_to_linker::<CallState, HasSelf<CallState>>(
            &mut generator,
            |state| state,
        )?;
        sandboxed_wasi::add_to_linker(&mut generator)?;

        let mut provider = Linker::new(engine);
        // Our own imports one by one: the world's `add_to_linker` would also want the WASI
        // interfaces, which come from wasmtime-wasi(-http) below.
        {
            use wit::provider::zonebroker::plugin::{log, provider_types, types};
            let l = &mut provider;
            log::add_to_linker::<CallState, HasSelf<CallState>>(l, |state| state)?;
            types::add_to_linker::<CallState, HasSelf<CallState>>(l, |state| state)?;
            provider_types::add_to_linker::<CallState, HasSelf<CallState>>(l, |state| state)?;
        }
        sandboxed_wasi::add_async_to_linker(&mut provider)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut provider)?;

        Ok(Linkers {
            strategy,
            generator,
            provider,
        })
    }
}

/// The WASI a plugin may see, all from [`CallState`]'s deterministic context: stdio,
/// environment (empty), exit, clocks and random; for strategies and generators also what
/// language runtimes import: a filesystem with no preopened directory (so no file can be
/// opened) and sockets that refuse to be created.
mod sandboxed_wasi {
    use wasmtime::component::{HasData, Linker, ResourceTable};
    use wasmtime_wasi::WasiView;
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random, sockets, sync};
    use wasmtime_wasi::random::WasiRandom;
    use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView};

    use crate::fixed_clock::{FixedClock, HasFixedClock};
    use crate::sandbox::CallState;

    struct HasIo;
    impl HasData for HasIo {
        type Data<'a> = &'a mut ResourceTable;
    }

    fn table(state: &mut CallState) -> &mut ResourceTable {
        state.ctx().table
    }

    /// For providers, whose calls are async: the async I/O (waiting on an HTTP response
    /// yields to the runtime) and the same non-blocking rest.
    pub fn add_async_to_linker(l: &mut Linker<CallState>) -> wasmtime::Result<()> {
        wasmtime_wasi::p2::add_to_linker_proxy_interfaces_async(l)?;
        random::insecure::add_to_linker::<_, WasiRandom>(l, |s| s.ctx().ctx.random())?;
        random::insecure_seed::add_to_linker::<_, WasiRandom>(l, |s| s.ctx().ctx.random())?;
        cli::exit::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::environment::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_input::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_output::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_stdin::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_stdout::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_stderr::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        Ok(())
    }

    pub fn add_to_linker(l: &mut Linker<CallState>) -> wasmtime::Result<()> {
        wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<_, HasIo>(l, table)?;
        sync::io::poll::add_to_linker::<_, HasIo>(l, table)?;
        sync::io::streams::add_to_linker::<_, HasIo>(l, table)?;
        clocks::wall_clock::add_to_linker::<_, WasiClocks>(l, CallState::clocks)?;
        clocks::monotonic_clock::add_to_linker::<_, HasFixedClock>(l, |s| FixedClock(table(s)))?;
        filesystem::preopens::add_to_linker::<_, WasiFilesystem>(l, CallState::filesystem)?;
        sync::filesystem::types::add_to_linker::<_, WasiFilesystem>(l, CallState::filesystem)?;
        sockets::instance_network::add_to_linker::<_, WasiSockets>(l, CallState::sockets)?;
        let network_options = sockets::network::LinkOptions::default();
        sockets::network::add_to_linker::<_, WasiSockets>(l, &network_options, CallState::sockets)?;
        sockets::ip_name_lookup::add_to_linker::<_, WasiSockets>(l, CallState::sockets)?;
        sockets::tcp_create_socket::add_to_linker::<_, WasiSockets>(l, CallState::sockets)?;
        sync::sockets::udp_create_socket::add_to_linker::<_, WasiSockets>(l, CallState::sockets)?;
        sync::sockets::tcp::add_to_linker::<_, WasiSockets>(l, CallState::sockets)?;
        sync::sockets::udp::add_to_linker::<_, WasiSockets>(l, CallState::sockets)?;
        random::random::add_to_linker::<_, WasiRandom>(l, |s| s.ctx().ctx.random())?;
        random::insecure::add_to_linker::<_, WasiRandom>(l, |s| s.ctx().ctx.random())?;
        random::insecure_seed::add_to_linker::<_, WasiRandom>(l, |s| s.ctx().ctx.random())?;
        cli::exit::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::environment::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::stdin::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::stdout::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::stderr::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_input::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_output::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_stdin::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_stdout::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        cli::terminal_stderr::add_to_linker::<_, WasiCli>(l, CallState::cli)?;
        Ok(())
    }
}
