//! The LMDB data file read by hand, before LMDB maps it: LMDB trusts its file, so a truncated
//! one makes its first read past the end a SIGBUS, and a zeroed or overwritten B-tree page
//! makes it abort on an assertion (or follow garbage). This module checks the meta pages and
//! walks every database's tree (branch and leaf pages, not the values they point to), so that
//! such a file is a named error instead.
//!
//! The layout (LMDB 0.9 "mdb.master", 64-bit): every page opens with a 16-byte header
//! (`mp_pgno` u64, `mp_pad` u16, `mp_flags` u16, then `mp_lower`/`mp_upper` u16 or, on an
//! overflow page, `mp_pages` u32), followed by `mp_ptrs`, one u16 offset per node. A node is
//! `mn_lo` u16, `mn_hi` u16, `mn_flags` u16, `mn_ksize` u16, the key, then the value (or, for
//! a big value, the u64 number of its first overflow page). Pages 0 and 1 are meta pages.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The magic number of an LMDB meta page.
const LMDB_MAGIC: u32 = 0xBEEF_C0DE;
const PAGE_HEADER: usize = 16;
const NODE_HEADER: usize = 8;
/// `MDB_db`, the record of one database: in a meta page for the free and main databases, as
/// the value of a named database's node in the main one.
const DB_RECORD: usize = 48;
/// The root of an empty database.
const NO_PAGE: u64 = u64::MAX;

// Page flags.
const P_BRANCH: u16 = 0x01;
const P_LEAF: u16 = 0x02;
const P_OVERFLOW: u16 = 0x04;
const P_LEAF2: u16 = 0x20;
// Node flags.
const F_BIGDATA: u16 = 0x01;
const F_SUBDATA: u16 = 0x02;
const F_DUPDATA: u16 = 0x04;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// One database's `MDB_db` record.
#[derive(Debug, Clone, Copy)]
struct DbRecord {
    depth: u16,
    branch_pages: u64,
    leaf_pages: u64,
    overflow_pages: u64,
    entries: u64,
    root: u64,
}

impl DbRecord {
    fn parse(b: &[u8]) -> Self {
        DbRecord {
            depth: u16_at(b, 6),
            branch_pages: u64_at(b, 8),
            leaf_pages: u64_at(b, 16),
            overflow_pages: u64_at(b, 24),
            entries: u64_at(b, 32),
            root: u64_at(b, 40),
        }
    }
}

/// A meta page: the free and main databases of one committed transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MetaPage {
    txnid: u64,
    last_page: u64,
    free: DbRecord,
    main: DbRecord,
}

/// What the meta pages of a data file say.
#[derive(Debug)]
pub(crate) struct DataFile {
    /// The file as opened for these checks; the tree walk reads through the same handle.
    file: std::fs::File,
    page_size: u64,
    len: u64,
    metas: Vec<MetaPage>,
}

impl DataFile {
    /// The meta page read that names commit `txnid`, if one does.
    pub(crate) fn meta_of(&self, txnid: u64) -> Option<MetaPage> {
        self.metas.iter().find(|m| m.txnid == txnid).copied()
    }
}

fn damaged(path: &Path, what: String) -> Error {
    Error::NotAnIndex { path: path.to_path_buf(), reason: format!("it is damaged: {what}; remove the folder and rebuild it with `rac index build`") }
}

/// Read the two meta pages of `data`: the magic, the page size, and whether the file is as
/// long as the newer one (larger txnid) says it must be.
pub(crate) fn check_meta(path: &Path, data: &Path) -> Result<DataFile> {
    // Offsets in a meta page: the page header, then MDB_meta: magic (u32) at 16, the free
    // database's record at 40 (its `md_pad` holds the page size), the main one's at 88,
    // `mm_last_pg` (u64) at 136 and `mm_txnid` (u64) at 144.
    const MAGIC_AT: usize = 16;
    const FREE_AT: usize = 40;
    const MAIN_AT: usize = FREE_AT + DB_RECORD;
    const LAST_PG_AT: usize = 136;
    const TXNID_AT: usize = 144;
    let file = std::fs::File::open(data).map_err(|e| Error::io("opening", "index data file", data, e))?;
    let size = || file.metadata().map_err(|e| Error::io("reading", "index data file", data, e)).map(|m| m.len());
    let mut first = [0u8; 152];
    if file.read_exact_at(&mut first, 0).is_err() {
        let len = size()?;
        return Err(Error::NotAnIndex {
            path: path.to_path_buf(),
            reason: format!("its data.mdb is {len} bytes, too short for an LMDB environment"),
        });
    }
    if u32_at(&first, MAGIC_AT) != LMDB_MAGIC {
        return Err(Error::NotAnIndex { path: path.to_path_buf(), reason: "its data.mdb is not an LMDB environment".into() });
    }
    let page_size = u32_at(&first, FREE_AT) as u64;
    if !page_size.is_power_of_two() || !(512..=65536).contains(&page_size) {
        return Err(damaged(path, format!("data.mdb records a page size of {page_size} bytes")));
    }
    let mut second = [0u8; 152];
    let read_second = file.read_exact_at(&mut second, page_size).is_ok();
    let parse = |b: &[u8]| MetaPage {
        txnid: u64_at(b, TXNID_AT),
        last_page: u64_at(b, LAST_PG_AT),
        free: DbRecord::parse(&b[FREE_AT..FREE_AT + DB_RECORD]),
        main: DbRecord::parse(&b[MAIN_AT..MAIN_AT + DB_RECORD]),
    };
    let mut metas = vec![parse(&first)];
    if read_second && u32_at(&second, MAGIC_AT) == LMDB_MAGIC {
        metas.push(parse(&second));
    }
    // Measured after the meta pages: a writer grows the file before it commits the meta
    // page that needs the new length, never after.
    let len = size()?;
    let newest = metas.iter().max_by_key(|m| m.txnid).expect("one meta page");
    let need = newest.last_page.saturating_add(1).saturating_mul(page_size).max(2 * page_size);
    if len < need {
        return Err(damaged(path, format!("data.mdb is {len} bytes, but its meta pages need {need} (truncated while it was copied or written?)")));
    }
    Ok(DataFile { file, page_size, len, metas })
}

/// How far [`check_tree`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Depth {
    /// Branch and leaf pages, and that each big value's overflow pages lie inside the file:
    /// a small share of the file (the vectors sit on overflow pages, or many to a leaf).
    Tree,
    /// Also the header of every overflow page (`rac index verify`).
    Overflow,
}

/// A database being walked: its name (for the message) and what its record claims.
struct Walk {
    name: String,
    record: DbRecord,
    branch_pages: u64,
    leaf_pages: u64,
    overflow_pages: u64,
    entries: u64,
    /// Whether it holds duplicate values (LMDB counts those in `entries` another way).
    dups: bool,
}

struct Walker<'f> {
    path: &'f Path,
    data: &'f Path,
    file: &'f std::fs::File,
    page_size: usize,
    /// Pages `0..pages` are in use by the snapshot being walked.
    pages: u64,
    seen: Vec<u64>,
    depth: Depth,
}

impl Walker<'_> {
    fn fail(&self, what: String) -> Error {
        damaged(self.path, what)
    }

    fn claim(&mut self, pgno: u64, db: &str) -> Result<()> {
        if pgno < 2 || pgno >= self.pages {
            return Err(self.fail(format!("database `{db}` points to page {pgno}, outside the {} pages in use", self.pages)));
        }
        let (word, bit) = ((pgno / 64) as usize, 1u64 << (pgno % 64));
        if self.seen[word] & bit != 0 {
            return Err(self.fail(format!("page {pgno} of data.mdb is reached twice (database `{db}`)")));
        }
        self.seen[word] |= bit;
        Ok(())
    }

    fn read(&self, pgno: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, pgno * self.page_size as u64).map_err(|e| Error::io("reading", "index data file", self.data, e))
    }

    /// Walk one database's tree; named databases found in the main one are walked in turn.
    fn walk(&mut self, mut db: Walk) -> Result<Vec<Walk>> {
        let mut named = Vec::new();
        if db.record.root == NO_PAGE {
            return Ok(named);
        }
        let ps = self.page_size;
        let mut page = vec![0u8; ps];
        let mut stack = vec![(db.record.root, 1u16)];
        while let Some((pgno, level)) = stack.pop() {
            let name = &db.name;
            self.claim(pgno, name)?;
            self.read(pgno, &mut page)?;
            let path = self.path;
            let bad = |what: &str| damaged(path, format!("page {pgno} of data.mdb (database `{name}`) {what}"));
            let header_pgno = u64_at(&page, 0);
            if header_pgno != pgno {
                return Err(bad(&format!("is not a B-tree page: its header names page {header_pgno}")));
            }
            let flags = u16_at(&page, 10);
            let is_leaf = flags & (P_LEAF | P_LEAF2) != 0;
            let kind_ok = if level < db.record.depth { flags & P_BRANCH != 0 && !is_leaf } else { is_leaf && flags & P_BRANCH == 0 };
            if level > db.record.depth || !kind_ok {
                return Err(bad(&format!("has flags {flags:#x} at level {level} of a tree {} deep", db.record.depth)));
            }
            let (lower, upper) = (u16_at(&page, 12) as usize, u16_at(&page, 14) as usize);
            if lower < PAGE_HEADER || lower > upper || upper > ps || !(lower - PAGE_HEADER).is_multiple_of(2) {
                return Err(bad(&format!("has its free space at {lower}..{upper} of {ps} bytes")));
            }
            if is_leaf {
                db.leaf_pages += 1;
            } else {
                db.branch_pages += 1;
            }
            if flags & P_LEAF2 != 0 {
                // Fixed-size duplicates, no nodes: the bounds above are all there is to check.
                continue;
            }
            let nodes = (lower - PAGE_HEADER) / 2;
            for i in 0..nodes {
                let at = u16_at(&page, PAGE_HEADER + 2 * i) as usize;
                if at < upper || at + NODE_HEADER > ps {
                    return Err(bad(&format!("has node {i} at byte {at}, outside {upper}..{ps}")));
                }
                let (lo, hi, nflags, ksize) =
                    (u16_at(&page, at) as u64, u16_at(&page, at + 2) as u64, u16_at(&page, at + 4), u16_at(&page, at + 6) as usize);
                let key_end = at + NODE_HEADER + ksize;
                if key_end > ps {
                    return Err(bad(&format!("has node {i} with a {ksize}-byte key past the page's end")));
                }
                if !is_leaf {
                    stack.push((lo | hi << 16 | (nflags as u64) << 32, level + 1));
                    continue;
                }
                db.entries += 1;
                let size = lo | hi << 16;
                if nflags & F_BIGDATA != 0 {
                    if key_end + 8 > ps {
                        return Err(bad(&format!("has node {i} whose overflow page number is past the page's end")));
                    }
                    let first = u64_at(&page, key_end);
                    // LMDB's OVPAGES: the value plus one page header, rounded up to pages.
                    let count = (PAGE_HEADER as u64 - 1 + size) / ps as u64 + 1;
                    if first < 2 || first.saturating_add(count) > self.pages {
                        return Err(bad(&format!(
                            "has node {i} whose {size}-byte value would sit on pages {first}..{}, outside the {} in use",
                            first.saturating_add(count),
                            self.pages
                        )));
                    }
                    db.overflow_pages += count;
                    if self.depth == Depth::Overflow {
                        self.check_overflow(first, count, name)?;
                    }
                    continue;
                }
                if key_end + size as usize > ps {
                    return Err(bad(&format!("has node {i} with a {size}-byte value past the page's end")));
                }
                let value = &page[key_end..key_end + size as usize];
                if nflags & F_DUPDATA != 0 {
                    db.dups = true;
                }
                if nflags & F_SUBDATA != 0 {
                    if value.len() != DB_RECORD {
                        return Err(bad(&format!("has node {i} holding a {}-byte database record", value.len())));
                    }
                    let record = DbRecord::parse(value);
                    let sub = if nflags & F_DUPDATA != 0 {
                        format!("{name} (duplicates)")
                    } else {
                        String::from_utf8_lossy(&page[at + NODE_HEADER..key_end]).into_owned()
                    };
                    named.push(Walk::new(sub, record));
                }
            }
        }
        self.compare(&db)?;
        Ok(named)
    }

    fn check_overflow(&mut self, first: u64, count: u64, db: &str) -> Result<()> {
        let mut header = [0u8; PAGE_HEADER];
        self.read(first, &mut header)?;
        let (pgno, flags, pages) = (u64_at(&header, 0), u16_at(&header, 10), u32_at(&header, 12) as u64);
        if pgno != first || flags & P_OVERFLOW == 0 || pages != count {
            return Err(self.fail(format!(
                "overflow page {first} of data.mdb (database `{db}`) names page {pgno} with flags {flags:#x} and {pages} pages, not {count}"
            )));
        }
        for p in first..first + count {
            self.claim(p, db)?;
        }
        Ok(())
    }

    /// The page and entry counts found against those the database's record claims.
    fn compare(&self, db: &Walk) -> Result<()> {
        let r = &db.record;
        let found = (db.branch_pages, db.leaf_pages, db.overflow_pages);
        if found != (r.branch_pages, r.leaf_pages, r.overflow_pages) || (!db.dups && db.entries != r.entries) {
            return Err(self.fail(format!(
                "database `{}` claims {} branch, {} leaf and {} overflow pages and {} entries, but holds {}, {}, {} and {}",
                db.name, r.branch_pages, r.leaf_pages, r.overflow_pages, r.entries, found.0, found.1, found.2, db.entries
            )));
        }
        Ok(())
    }
}

impl Walk {
    fn new(name: String, record: DbRecord) -> Self {
        Walk { name, record, branch_pages: 0, leaf_pages: 0, overflow_pages: 0, entries: 0, dups: false }
    }
}

/// Walk every database of the snapshot committed by transaction `txnid` (the one a read
/// transaction of this process holds, so that no writer reuses its pages meanwhile). When
/// neither meta page is that transaction's any more (two commits by another process since),
/// the newest is walked: its pages are younger than any our reader could keep alive, so a
/// reused page still reads as a whole page.
pub(crate) fn check_tree(path: &Path, data: &Path, file: &DataFile, meta: MetaPage, depth: Depth) -> Result<()> {
    let pages = (meta.last_page + 1).min(file.len / file.page_size);
    let mut walker =
        Walker { path, data, file: &file.file, page_size: file.page_size as usize, pages, seen: vec![0; pages.div_ceil(64) as usize], depth };
    walker.walk(Walk::new("free pages".into(), meta.free))?;
    let mut queue = walker.walk(Walk::new("main".into(), meta.main))?;
    while let Some(db) = queue.pop() {
        queue.extend(walker.walk(db)?);
    }
    Ok(())
}

/// The LMDB data file of an index folder.
pub(crate) fn data_file(dir: &Path) -> PathBuf {
    dir.join("data.mdb")
}
