//! `file_size` and `open_files` for preview-1 modules: wasmtime-wasi's
//! `path_open`, `fd_close`, `fd_renumber`, `fd_fdstat_set_flags`,
//! `fd_write`, `fd_pwrite` and `fd_filestat_set_size` are replaced in the
//! linker by versions that keep count of the guest's open descriptors and
//! check where a write would end before calling wasmtime-wasi's own.
//!
//! * `open_files`: the guest holds at most this many descriptors, stdio and
//!   preopened directories included (as `RLIMIT_NOFILE` counts them in the
//!   jail); one more `path_open` fails with `EMFILE`.
//! * `file_size`: a write (or `fd_filestat_set_size`) that would make a
//!   file larger than this fails with `EFBIG` and writes nothing (the jail's
//!   `RLIMIT_FSIZE` would write up to the limit and then signal).
//!
//! Either refusal is recorded as a violation of kind `limit`, and the run
//! ends as `violation` if it otherwise exited by itself (as for a denied host
//! call). Only files the guest opened itself can be written, so the checks
//! cost nothing for stdio. Components (WASI 0.2) are not covered: their
//! report says `not_enforced` (run.rs).

use std::collections::BTreeMap;

use wasmtime::{AsContextMut, Caller, Extern, Linker};
use wasmtime_wasi::p1::types::{Errno, Fd, Fdflags};
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self as wasi_p1, WasiSnapshotPreview1};
use wasmtime_wasi::p1::WasiP1Ctx;
use wiggle::GuestMemory;

use crate::run::RunState;

const WASI: &str = "wasi_snapshot_preview1";
type Ctx<'a> = Caller<'a, RunState>;

/// Distinct refusals kept per run (then only counted).
const MAX_KINDS: usize = 16;

/// The descriptor limits of one run.
#[derive(Debug, Default)]
pub(crate) struct FsLimits {
    /// Largest size a write may give a file.
    max_file_bytes: u64,
    /// Most descriptors the guest may hold.
    max_open: u64,
    /// Descriptors held from the start: stdio and preopened directories.
    base: u64,
    /// Descriptors the guest opened: whether each is in append mode. (A
    /// B-tree: a hash map's random keys cost every run a thread-local
    /// read, and most runs open nothing.)
    opened: BTreeMap<u32, bool>,
    /// Refusals, by detail, counted.
    refused: Vec<(String, u64)>,
    /// Writes refused at the file-size limit, and opens at the descriptor
    /// limit.
    pub file_size_refusals: u64,
    pub open_files_refusals: u64,
}

impl FsLimits {
    pub fn new(max_file_bytes: u64, max_open: u64, preopens: usize) -> Self {
        FsLimits {
            max_file_bytes,
            max_open,
            base: 3 + preopens as u64,
            opened: BTreeMap::new(),
            refused: Vec::new(),
            file_size_refusals: 0,
            open_files_refusals: 0,
        }
    }

    /// The limits the guest reached, for the report's `limits_reached`.
    pub fn limits_reached(&self) -> Vec<warden_core::LimitReached> {
        let mut reached = Vec::new();
        if self.file_size_refusals > 0 {
            reached.push(warden_core::LimitReached::new(
                "file_size",
                warden_core::human_bytes(self.max_file_bytes),
                format!("{} writes refused (EFBIG)", self.file_size_refusals),
                self.file_size_refusals,
                false,
            ));
        }
        if self.open_files_refusals > 0 {
            reached.push(warden_core::LimitReached::new(
                "open_files",
                format!("{} descriptors", self.max_open),
                format!("{} opens refused (EMFILE)", self.open_files_refusals),
                self.open_files_refusals,
                false,
            ));
        }
        reached
    }

    fn refuse(&mut self, detail: String) {
        if let Some((_, n)) = self.refused.iter_mut().find(|(d, _)| *d == detail) {
            *n += 1;
        } else if self.refused.len() < MAX_KINDS {
            self.refused.push((detail, 1));
        }
    }

    /// The refusals as report violations (kind `limit`).
    pub fn violations(&self) -> Vec<warden_core::Violation> {
        self.refused
            .iter()
            .map(|(detail, n)| warden_core::Violation {
                kind: "limit".into(),
                detail: if *n == 1 {
                    detail.clone()
                } else {
                    format!("{detail} ({n} attempts)")
                },
            })
            .collect()
    }

    pub fn any_refused(&self) -> bool {
        !self.refused.is_empty()
    }

    /// `EFBIG` (and a recorded refusal) if a write ending at `end` would make
    /// a file larger than the limit.
    fn check_end(&mut self, function: &str, end: Option<u64>) -> Option<i32> {
        match end {
            Some(end) if end <= self.max_file_bytes => None,
            _ => {
                self.file_size_refusals += 1;
                self.refuse(format!(
                    "{function}: file_size limit of {} bytes reached (EFBIG)",
                    self.max_file_bytes
                ));
                Some(Errno::Fbig as i32)
            }
        }
    }
}

/// Runs `$body` with wasmtime-wasi's preview-1 implementation (`$ctx`) and
/// the guest's memory (`$mem`), as its generated glue does (a module without
/// an exported memory is refused, as by wasmtime-wasi).
macro_rules! with_wasi {
    ($caller:ident, |$ctx:ident, $mem:ident| $body:expr) => {{
        let fuel = $caller.as_context_mut().hostcall_fuel();
        match $caller.get_export("memory") {
            Some(Extern::Memory(m)) => {
                let (mem, state) = m.data_and_store_mut(&mut $caller);
                state.wasi.set_hostcall_fuel(fuel);
                let $ctx: &mut WasiP1Ctx = &mut state.wasi;
                let $mem = &mut GuestMemory::Unshared(mem);
                $body
            }
            Some(Extern::SharedMemory(m)) => {
                let state = $caller.data_mut();
                state.wasi.set_hostcall_fuel(fuel);
                let $ctx: &mut WasiP1Ctx = &mut state.wasi;
                let $mem = &mut GuestMemory::Shared(m.data());
                $body
            }
            _ => Err(wasmtime::Error::msg("missing required memory export")),
        }
    }};
}

/// Reads a little-endian `u32` of guest memory (`None` out of bounds).
fn read_u32(caller: &mut Ctx<'_>, at: u32) -> Option<u32> {
    let Some(Extern::Memory(m)) = caller.get_export("memory") else {
        return None;
    };
    let data = m.data(&caller);
    let at = at as usize;
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Length of the first non-empty buffer of an iovec array: what
/// wasmtime-wasi's `fd_write` writes. `None`: unreadable (wasmtime-wasi
/// will fail the call itself).
fn first_write_len(caller: &mut Ctx<'_>, iovs: i32, n: i32) -> Option<u64> {
    for i in 0..(n as u32).min(1024) {
        let len = read_u32(caller, (iovs as u32).checked_add(i * 8 + 4)?)?;
        if len > 0 {
            return Some(u64::from(len));
        }
    }
    Some(0)
}

/// Where a write of `len` bytes to `fd` at `offset` (its position when
/// `None`) would end, if it is a file the guest opened; `Ok(None)`: not one
/// of those, nothing to check.
async fn write_end(
    mut caller: &mut Ctx<'_>,
    fd: i32,
    len: u64,
    offset: Option<u64>,
) -> wasmtime::Result<Option<Option<u64>>> {
    let Some(&append) = caller.data().fs.opened.get(&(fd as u32)) else {
        return Ok(None);
    };
    let wasi_fd = Fd::from(fd as u32);
    let start: wasmtime::Result<Option<u64>> = with_wasi!(caller, |ctx, mem| Ok(if append {
        // Appends go to the end, whatever the offset.
        WasiSnapshotPreview1::fd_filestat_get(ctx, mem, wasi_fd)
            .await
            .ok()
            .map(|st| st.size)
    } else {
        match offset {
            Some(o) => Some(o),
            None => WasiSnapshotPreview1::fd_tell(ctx, mem, wasi_fd).ok(),
        }
    }));
    // A descriptor wasmtime-wasi cannot position is left to it to refuse.
    Ok(start?.map(|s| s.checked_add(len)))
}

/// Replaces the preview-1 functions that open, close and write files.
pub(crate) fn add_to_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap_async(
        WASI,
        "path_open",
        |mut caller: Ctx<'_>,
         (dirfd, dirflags, path, path_len, oflags, base, inheriting, fdflags, out): (
            i32,
            i32,
            i32,
            i32,
            i32,
            i64,
            i64,
            i32,
            i32,
        )| {
            Box::new(async move {
                let fs = &mut caller.data_mut().fs;
                if fs.base + fs.opened.len() as u64 >= fs.max_open {
                    let detail = format!(
                        "path_open: open_files limit of {} descriptors reached (EMFILE)",
                        fs.max_open
                    );
                    fs.open_files_refusals += 1;
                    fs.refuse(detail);
                    return Ok(Errno::Mfile as i32);
                }
                let errno = with_wasi!(caller, |ctx, mem| {
                    wasi_p1::path_open(
                        ctx, mem, dirfd, dirflags, path, path_len, oflags, base, inheriting,
                        fdflags, out,
                    )
                    .await
                })?;
                if errno == 0 {
                    if let Some(fd) = read_u32(&mut caller, out as u32) {
                        let append = (fdflags as u16) & Fdflags::APPEND.bits() != 0;
                        caller.data_mut().fs.opened.insert(fd, append);
                    }
                }
                Ok(errno)
            })
        },
    )?;
    linker.func_wrap_async(WASI, "fd_close", |mut caller: Ctx<'_>, (fd,): (i32,)| {
        Box::new(async move {
            let errno = with_wasi!(caller, |ctx, mem| wasi_p1::fd_close(ctx, mem, fd).await)?;
            if errno == 0 {
                caller.data_mut().fs.opened.remove(&(fd as u32));
            }
            Ok(errno)
        })
    })?;
    linker.func_wrap_async(
        WASI,
        "fd_renumber",
        |mut caller: Ctx<'_>, (from, to): (i32, i32)| {
            Box::new(async move {
                let errno =
                    with_wasi!(caller, |ctx, mem| wasi_p1::fd_renumber(ctx, mem, from, to)
                        .await)?;
                if errno == 0 && from != to {
                    // `to` was closed and now is what `from` was.
                    let opened = &mut caller.data_mut().fs.opened;
                    opened.remove(&(to as u32));
                    if let Some(append) = opened.remove(&(from as u32)) {
                        opened.insert(to as u32, append);
                    }
                }
                Ok(errno)
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_fdstat_set_flags",
        |mut caller: Ctx<'_>, fd: i32, flags: i32| -> wasmtime::Result<i32> {
            let errno: i32 = with_wasi!(caller, |ctx, mem| wasi_p1::fd_fdstat_set_flags(
                ctx, mem, fd, flags
            ))?;
            if errno == 0 {
                if let Some(append) = caller.data_mut().fs.opened.get_mut(&(fd as u32)) {
                    *append = (flags as u16) & Fdflags::APPEND.bits() != 0;
                }
            }
            Ok(errno)
        },
    )?;
    linker.func_wrap_async(
        WASI,
        "fd_write",
        |mut caller: Ctx<'_>, (fd, iovs, n, nwritten): (i32, i32, i32, i32)| {
            Box::new(async move {
                if caller.data().fs.opened.contains_key(&(fd as u32)) {
                    if let Some(len) = first_write_len(&mut caller, iovs, n) {
                        if let Some(end) = write_end(&mut caller, fd, len, None).await? {
                            if let Some(errno) = caller.data_mut().fs.check_end("fd_write", end) {
                                return Ok(errno);
                            }
                        }
                    }
                }
                with_wasi!(caller, |ctx, mem| {
                    wasi_p1::fd_write(ctx, mem, fd, iovs, n, nwritten).await
                })
            })
        },
    )?;
    linker.func_wrap_async(
        WASI,
        "fd_pwrite",
        |mut caller: Ctx<'_>, (fd, iovs, n, offset, nwritten): (i32, i32, i32, i64, i32)| {
            Box::new(async move {
                if caller.data().fs.opened.contains_key(&(fd as u32)) {
                    if let Some(len) = first_write_len(&mut caller, iovs, n) {
                        if let Some(end) =
                            write_end(&mut caller, fd, len, Some(offset as u64)).await?
                        {
                            if let Some(errno) = caller.data_mut().fs.check_end("fd_pwrite", end) {
                                return Ok(errno);
                            }
                        }
                    }
                }
                with_wasi!(caller, |ctx, mem| {
                    wasi_p1::fd_pwrite(ctx, mem, fd, iovs, n, offset, nwritten).await
                })
            })
        },
    )?;
    linker.func_wrap_async(
        WASI,
        "fd_filestat_set_size",
        |mut caller: Ctx<'_>, (fd, size): (i32, i64)| {
            Box::new(async move {
                if caller.data().fs.opened.contains_key(&(fd as u32)) {
                    if let Some(errno) = caller
                        .data_mut()
                        .fs
                        .check_end("fd_filestat_set_size", Some(size as u64))
                    {
                        return Ok(errno);
                    }
                }
                with_wasi!(caller, |ctx, mem| {
                    wasi_p1::fd_filestat_set_size(ctx, mem, fd, size).await
                })
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
