//! Corosync's client libraries, `libcpg.so.4` and `libquorum.so.5`, opened with `dlopen` the
//! first time a `[cluster]` member connects, not linked.
//!
//! Why not linked (rust-corosync did that): a linked libcpg pulls libqb, libsystemd, libgcrypt,
//! libgpg-error, libzstd, liblzma and liblz4 into every fenced, cluster or not, and their
//! relocated data and start-up code cost 1.2 MiB of idle RSS (the packaged example
//! configuration, release profile, 30 s idle: 8.4 MiB linked, 7.2 MiB opened at run time;
//! `hw-tests/figures/speed.md`) on a fence controller whose budget is 6 MiB. It also made every fenced
//! build need the target architecture's `libcpg-dev`, which is why the arm64 build went without
//! `[cluster]`. Opened at run time, a node without `[cluster]` never maps them, and a node
//! with it and without the libraries gets an error that names the package to install.
//!
//! The declarations follow `corosync/cpg.h`, `corosync/quorum.h` and `corosync/corotypes.h`
//! of Corosync 3 (ABI of libcpg.so.4 and libquorum.so.5, stable since Corosync 2).

use std::ffi::{c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

/// A libcpg or libquorum connection handle (`cpg_handle_t`, `quorum_handle_t`).
pub type Handle = u64;

/// `CS_OK`.
const CS_OK: c_int = 1;
/// `CS_DISPATCH_ALL`: run every pending callback, do not block.
pub const DISPATCH_ALL: c_int = 2;
/// `CPG_MODEL_V1`.
const CPG_MODEL_V1: c_int = 1;
/// `QUORUM_MODEL_V1`.
const QUORUM_MODEL_V1: c_int = 1;
/// `CPG_TYPE_AGREED`: every member delivers in the same total order.
const CPG_TYPE_AGREED: c_int = 2;
/// `CS_TRACK_CHANGES`.
const CS_TRACK_CHANGES: c_uint = 2;
/// `CPG_MAX_NAME_LENGTH`.
pub const MAX_NAME: usize = 128;

/// A failed libcpg/libquorum call: Corosync's `cs_error_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsError(pub c_int);

/// `CS_ERR_TRY_AGAIN`: flow control; the call may be retried.
pub const TRY_AGAIN: CsError = CsError(6);

impl std::fmt::Display for CsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The names of corotypes.h, so an operator can look them up.
        let name = match self.0 {
            2 => "CS_ERR_LIBRARY (cannot reach corosync's IPC: is corosync running?)",
            3 => "CS_ERR_VERSION",
            4 => "CS_ERR_INIT",
            5 => "CS_ERR_TIMEOUT",
            6 => "CS_ERR_TRY_AGAIN",
            7 => "CS_ERR_INVALID_PARAM",
            8 => "CS_ERR_NO_MEMORY",
            9 => "CS_ERR_BAD_HANDLE (the connection is gone)",
            10 => "CS_ERR_BUSY",
            11 => "CS_ERR_ACCESS (not allowed by corosync's uidgid configuration)",
            12 => "CS_ERR_NOT_EXIST",
            13 => "CS_ERR_NAME_TOO_LONG",
            14 => "CS_ERR_EXIST",
            15 => "CS_ERR_NO_SPACE",
            16 => "CS_ERR_INTERRUPT",
            17 => "CS_ERR_NAME_NOT_FOUND",
            18 => "CS_ERR_NO_RESOURCES",
            19 => "CS_ERR_NOT_SUPPORTED",
            20 => "CS_ERR_BAD_OPERATION",
            21 => "CS_ERR_FAILED_OPERATION",
            22 => "CS_ERR_MESSAGE_ERROR",
            23 => "CS_ERR_QUEUE_FULL",
            24 => "CS_ERR_QUEUE_NOT_AVAILABLE",
            25 => "CS_ERR_BAD_FLAGS",
            26 => "CS_ERR_TOO_BIG",
            27 => "CS_ERR_NO_SECTIONS",
            28 => "CS_ERR_CONTEXT_NOT_FOUND",
            30 => "CS_ERR_TOO_MANY_GROUPS",
            100 => "CS_ERR_SECURITY",
            _ => return write!(f, "cs_error_t {}", self.0),
        };
        f.write_str(name)
    }
}

fn check(rc: c_int) -> Result<(), CsError> {
    if rc == CS_OK {
        Ok(())
    } else {
        Err(CsError(rc))
    }
}

/// `struct cpg_name`.
#[repr(C)]
pub struct CpgName {
    /// Bytes used of `value`.
    pub length: u32,
    /// The group's name, not NUL-terminated.
    pub value: [u8; MAX_NAME],
}

impl CpgName {
    /// The CPG name of `group`; `None` when it is longer than CPG allows.
    pub fn new(group: &str) -> Option<CpgName> {
        let b = group.as_bytes();
        if b.len() > MAX_NAME {
            return None;
        }
        let mut value = [0u8; MAX_NAME];
        value[..b.len()].copy_from_slice(b);
        Some(CpgName {
            length: b.len() as u32,
            value,
        })
    }
}

/// `struct cpg_address`: a member (node and process) and why it is in a list.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CpgAddress {
    /// Corosync's node id.
    pub nodeid: u32,
    /// The member's process id.
    pub pid: u32,
    /// `cpg_reason_t`.
    pub reason: u32,
}

/// `struct cpg_ring_id` and `struct quorum_ring_id` (same layout).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RingId {
    /// The node that formed the ring.
    pub nodeid: u32,
    /// The ring's sequence number.
    pub seq: u64,
}

/// `cpg_deliver_fn_t`.
pub type DeliverFn = unsafe extern "C" fn(Handle, *const CpgName, u32, u32, *mut c_void, usize);
/// `cpg_confchg_fn_t`.
pub type ConfchgFn = unsafe extern "C" fn(
    Handle,
    *const CpgName,
    *const CpgAddress,
    usize,
    *const CpgAddress,
    usize,
    *const CpgAddress,
    usize,
);
type TotemConfchgFn = unsafe extern "C" fn(Handle, RingId, u32, *const u32);
/// `quorum_v1_quorum_notification_fn_t`.
pub type QuorumFn = unsafe extern "C" fn(Handle, u32, RingId, u32, *const u32);
type NodelistFn =
    unsafe extern "C" fn(Handle, RingId, u32, *const u32, u32, *const u32, u32, *const u32);

/// `cpg_model_v1_data_t`.
#[repr(C)]
struct CpgModelV1 {
    model: c_int,
    deliver: Option<DeliverFn>,
    confchg: Option<ConfchgFn>,
    totem_confchg: Option<TotemConfchgFn>,
    flags: c_uint,
}

/// `quorum_model_v1_data_t`.
#[repr(C)]
struct QuorumModelV1 {
    model: c_int,
    quorum: Option<QuorumFn>,
    nodelist: Option<NodelistFn>,
}

/// The entry points fenced uses, resolved once.
struct Lib {
    cpg_model_initialize:
        unsafe extern "C" fn(*mut Handle, c_int, *mut c_void, *mut c_void) -> c_int,
    cpg_finalize: unsafe extern "C" fn(Handle) -> c_int,
    cpg_fd_get: unsafe extern "C" fn(Handle, *mut c_int) -> c_int,
    cpg_context_get: unsafe extern "C" fn(Handle, *mut *mut c_void) -> c_int,
    cpg_dispatch: unsafe extern "C" fn(Handle, c_int) -> c_int,
    cpg_join: unsafe extern "C" fn(Handle, *const CpgName) -> c_int,
    cpg_leave: unsafe extern "C" fn(Handle, *const CpgName) -> c_int,
    cpg_mcast_joined: unsafe extern "C" fn(Handle, c_int, *const libc::iovec, c_uint) -> c_int,
    cpg_local_get: unsafe extern "C" fn(Handle, *mut c_uint) -> c_int,
    quorum_model_initialize:
        unsafe extern "C" fn(*mut Handle, c_int, *mut c_void, *mut u32, *mut c_void) -> c_int,
    quorum_finalize: unsafe extern "C" fn(Handle) -> c_int,
    quorum_fd_get: unsafe extern "C" fn(Handle, *mut c_int) -> c_int,
    quorum_dispatch: unsafe extern "C" fn(Handle, c_int) -> c_int,
    quorum_getquorate: unsafe extern "C" fn(Handle, *mut c_int) -> c_int,
    quorum_trackstart: unsafe extern "C" fn(Handle, c_uint) -> c_int,
    quorum_context_get: unsafe extern "C" fn(Handle, *mut *const c_void) -> c_int,
}

/// Why Corosync's libraries could not be used; says what to install.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot load {what}: {why}; fenced's [cluster] needs Corosync's client libraries (Debian: apt install libcpg4 libquorum5)")]
pub struct LoadError {
    /// The library or symbol.
    pub what: String,
    /// `dlerror`'s text.
    pub why: String,
}

fn dlerror() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl call
    // on this thread; it is copied at once.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown dlopen error".into()
    } else {
        // SAFETY: as above.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

fn open(name: &CStr) -> Result<*mut c_void, LoadError> {
    // SAFETY: a NUL-terminated name; RTLD_LOCAL keeps the libraries' symbols out of the global
    // namespace. The handle is never closed: the libraries live as long as the process.
    let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        return Err(LoadError {
            what: name.to_string_lossy().into_owned(),
            why: dlerror(),
        });
    }
    Ok(h)
}

/// Resolves `name` in `lib` as a function pointer of type `F`.
///
/// # Safety
/// `F` must be the `extern "C"` function pointer type of the symbol's C declaration.
unsafe fn sym<F: Copy>(lib: *mut c_void, name: &CStr) -> Result<F, LoadError> {
    // SAFETY: a handle from dlopen and a NUL-terminated name.
    let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
    if p.is_null() {
        return Err(LoadError {
            what: format!("symbol {}", name.to_string_lossy()),
            why: dlerror(),
        });
    }
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: the caller names the symbol's type; function and data pointers have the same
    // size and representation on the platforms glibc supports.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

impl Lib {
    fn load() -> Result<Lib, LoadError> {
        let cpg = open(c"libcpg.so.4")?;
        let q = open(c"libquorum.so.5")?;
        // SAFETY: each type below is the declaration of the same name in cpg.h/quorum.h.
        unsafe {
            Ok(Lib {
                cpg_model_initialize: sym(cpg, c"cpg_model_initialize")?,
                cpg_finalize: sym(cpg, c"cpg_finalize")?,
                cpg_fd_get: sym(cpg, c"cpg_fd_get")?,
                cpg_context_get: sym(cpg, c"cpg_context_get")?,
                cpg_dispatch: sym(cpg, c"cpg_dispatch")?,
                cpg_join: sym(cpg, c"cpg_join")?,
                cpg_leave: sym(cpg, c"cpg_leave")?,
                cpg_mcast_joined: sym(cpg, c"cpg_mcast_joined")?,
                cpg_local_get: sym(cpg, c"cpg_local_get")?,
                quorum_model_initialize: sym(q, c"quorum_model_initialize")?,
                quorum_finalize: sym(q, c"quorum_finalize")?,
                quorum_fd_get: sym(q, c"quorum_fd_get")?,
                quorum_dispatch: sym(q, c"quorum_dispatch")?,
                quorum_getquorate: sym(q, c"quorum_getquorate")?,
                quorum_trackstart: sym(q, c"quorum_trackstart")?,
                quorum_context_get: sym(q, c"quorum_context_get")?,
            })
        }
    }
}

static LIB: OnceLock<Result<Lib, LoadError>> = OnceLock::new();

fn lib() -> Result<&'static Lib, LoadError> {
    LIB.get_or_init(Lib::load).as_ref().map_err(Clone::clone)
}

/// Loads the libraries now (idempotent); the error names what is missing.
pub fn load() -> Result<(), LoadError> {
    lib().map(|_| ())
}

/// The loaded library; only reachable after [`load`] succeeded (a handle exists).
fn loaded() -> &'static Lib {
    match LIB.get() {
        Some(Ok(l)) => l,
        // Handles are only made by `Cpg::open`/`Quorum::open`, which load first.
        _ => unreachable!("a Corosync handle exists only after the libraries loaded"),
    }
}

/// One libcpg connection, finalized on drop.
pub struct Cpg(Handle);

impl Cpg {
    /// `cpg_model_initialize` with the given callbacks; `context` is what
    /// [`Cpg::context`] returns inside them.
    ///
    /// # Safety
    /// The callbacks run only inside [`Cpg::dispatch`]; `context` must stay valid for what
    /// they do with it until this connection is dropped.
    pub unsafe fn open(
        deliver: DeliverFn,
        confchg: ConfchgFn,
        context: *mut c_void,
    ) -> Result<Cpg, OpenError> {
        let l = lib()?;
        let mut model = CpgModelV1 {
            model: CPG_MODEL_V1,
            deliver: Some(deliver),
            confchg: Some(confchg),
            totem_confchg: None,
            flags: 0,
        };
        let mut h: Handle = 0;
        // SAFETY: libcpg copies the model data; `h` is written on success.
        check(unsafe {
            (l.cpg_model_initialize)(
                &mut h,
                CPG_MODEL_V1,
                std::ptr::from_mut(&mut model).cast(),
                context,
            )
        })
        .map_err(|e| OpenError::Call("cpg_model_initialize", e))?;
        Ok(Cpg(h))
    }

    /// The context given at [`Cpg::open`] of the connection `h` (in a callback).
    pub fn context(h: Handle) -> Option<*mut c_void> {
        let mut c: *mut c_void = std::ptr::null_mut();
        // SAFETY: `c` is written on success; an unknown handle is an error.
        check(unsafe { (loaded().cpg_context_get)(h, &mut c) }).ok()?;
        (!c.is_null()).then_some(c)
    }

    /// `cpg_fd_get`.
    pub fn fd(&self) -> Result<c_int, CsError> {
        let mut fd: c_int = -1;
        // SAFETY: `fd` is written on success.
        check(unsafe { (loaded().cpg_fd_get)(self.0, &mut fd) })?;
        Ok(fd)
    }

    /// `cpg_local_get`: this node's id.
    pub fn local_node(&self) -> Result<u32, CsError> {
        let mut n: c_uint = 0;
        // SAFETY: `n` is written on success.
        check(unsafe { (loaded().cpg_local_get)(self.0, &mut n) })?;
        Ok(n)
    }

    /// `cpg_join`.
    pub fn join(&self, group: &CpgName) -> Result<(), CsError> {
        // SAFETY: libcpg reads the name during the call.
        check(unsafe { (loaded().cpg_join)(self.0, group) })
    }

    /// `cpg_leave`.
    pub fn leave(&self, group: &CpgName) -> Result<(), CsError> {
        // SAFETY: as in `join`.
        check(unsafe { (loaded().cpg_leave)(self.0, group) })
    }

    /// `cpg_mcast_joined` of one buffer in agreed order.
    pub fn mcast_agreed(&self, bytes: &[u8]) -> Result<(), CsError> {
        let iov = libc::iovec {
            iov_base: bytes.as_ptr().cast_mut().cast(),
            iov_len: bytes.len(),
        };
        // SAFETY: libcpg copies the buffer during the call and never writes through it.
        check(unsafe { (loaded().cpg_mcast_joined)(self.0, CPG_TYPE_AGREED, &iov, 1) })
    }

    /// `cpg_dispatch(CS_DISPATCH_ALL)`: runs the callbacks of what is pending.
    pub fn dispatch(&self) -> Result<(), CsError> {
        // SAFETY: the callbacks run on this thread, inside this call.
        check(unsafe { (loaded().cpg_dispatch)(self.0, DISPATCH_ALL) })
    }
}

impl Drop for Cpg {
    fn drop(&mut self) {
        // SAFETY: the handle is ours and not used after this.
        let _ = unsafe { (loaded().cpg_finalize)(self.0) };
    }
}

/// One libquorum connection, finalized on drop.
pub struct Quorum(Handle);

impl Quorum {
    /// `quorum_model_initialize` with the quorum callback; `context` is what
    /// [`Quorum::context`] returns inside it.
    ///
    /// # Safety
    /// As for [`Cpg::open`], with [`Quorum::dispatch`].
    pub unsafe fn open(notify: QuorumFn, context: *mut c_void) -> Result<Quorum, OpenError> {
        let l = lib()?;
        let mut model = QuorumModelV1 {
            model: QUORUM_MODEL_V1,
            quorum: Some(notify),
            nodelist: None,
        };
        let mut h: Handle = 0;
        let mut kind: u32 = 0;
        // SAFETY: libquorum copies the model data; `h` and `kind` are written on success.
        check(unsafe {
            (l.quorum_model_initialize)(
                &mut h,
                QUORUM_MODEL_V1,
                std::ptr::from_mut(&mut model).cast(),
                &mut kind,
                context,
            )
        })
        .map_err(|e| OpenError::Call("quorum_model_initialize", e))?;
        Ok(Quorum(h))
    }

    /// The context given at [`Quorum::open`] of the connection `h` (in a callback).
    pub fn context(h: Handle) -> Option<*const c_void> {
        let mut c: *const c_void = std::ptr::null();
        // SAFETY: `c` is written on success.
        check(unsafe { (loaded().quorum_context_get)(h, &mut c) }).ok()?;
        (!c.is_null()).then_some(c)
    }

    /// `quorum_fd_get`.
    pub fn fd(&self) -> Result<c_int, CsError> {
        let mut fd: c_int = -1;
        // SAFETY: `fd` is written on success.
        check(unsafe { (loaded().quorum_fd_get)(self.0, &mut fd) })?;
        Ok(fd)
    }

    /// `quorum_getquorate`.
    pub fn quorate(&self) -> Result<bool, CsError> {
        let mut q: c_int = 0;
        // SAFETY: `q` is written on success.
        check(unsafe { (loaded().quorum_getquorate)(self.0, &mut q) })?;
        Ok(q != 0)
    }

    /// `quorum_trackstart(CS_TRACK_CHANGES)`.
    pub fn track_changes(&self) -> Result<(), CsError> {
        // SAFETY: a plain call on our handle.
        check(unsafe { (loaded().quorum_trackstart)(self.0, CS_TRACK_CHANGES) })
    }

    /// `quorum_dispatch(CS_DISPATCH_ALL)`.
    pub fn dispatch(&self) -> Result<(), CsError> {
        // SAFETY: the callback runs on this thread, inside this call.
        check(unsafe { (loaded().quorum_dispatch)(self.0, DISPATCH_ALL) })
    }
}

impl Drop for Quorum {
    fn drop(&mut self) {
        // SAFETY: the handle is ours and not used after this.
        let _ = unsafe { (loaded().quorum_finalize)(self.0) };
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The libraries are missing.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The initialize call failed.
    #[error("corosync {0} failed: {1}")]
    Call(&'static str, CsError),
}

/// A C `(pointer, length)` pair as a slice; empty for NULL.
///
/// # Safety
/// `p` must be NULL or valid for `len` elements for the call's duration.
pub unsafe fn slice<'a, T>(p: *const T, len: usize) -> &'a [T] {
    if p.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: per this function's contract.
        unsafe { std::slice::from_raw_parts(p, len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpg_name_holds_at_most_128_bytes() {
        let n = CpgName::new("palisade").unwrap();
        assert_eq!(n.length, 8);
        assert_eq!(&n.value[..8], b"palisade");
        assert!(CpgName::new(&"x".repeat(MAX_NAME)).is_some());
        assert!(CpgName::new(&"x".repeat(MAX_NAME + 1)).is_none());
    }

    #[test]
    fn a_missing_library_names_itself_and_the_packages() {
        let e = open(c"libcpg-not-installed.so.4").unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("cannot load libcpg-not-installed.so.4: "),
            "{s}"
        );
        assert!(
            s.contains("libcpg-not-installed.so.4: cannot open shared object file"),
            "{s}"
        );
        assert!(s.contains("apt install libcpg4 libquorum5"), "{s}");
    }

    // With the feature only: the arm64 stage of CI runs these tests under qemu-aarch64 without
    // the feature, and has no arm64 libcpg.
    #[cfg(feature = "corosync")]
    #[test]
    fn the_installed_libraries_resolve_every_entry_point() {
        // CI installs Corosync (scripts/install-test-deps.sh); every symbol fenced calls exists.
        load().unwrap();
    }

    #[test]
    fn errors_carry_corotypes_names() {
        assert_eq!(TRY_AGAIN.to_string(), "CS_ERR_TRY_AGAIN");
        assert!(CsError(2).to_string().starts_with("CS_ERR_LIBRARY"));
        assert_eq!(CsError(99).to_string(), "cs_error_t 99");
    }

    #[test]
    fn layouts_match_the_c_headers() {
        // x86-64 and aarch64 (LP64): cpg_name 4 + 128, cpg_address 3 x u32, ring id padded.
        assert_eq!(std::mem::size_of::<CpgName>(), 132);
        assert_eq!(std::mem::size_of::<CpgAddress>(), 12);
        assert_eq!(std::mem::size_of::<RingId>(), 16);
        assert_eq!(std::mem::size_of::<CpgModelV1>(), 40);
        assert_eq!(std::mem::size_of::<QuorumModelV1>(), 24);
    }
}
