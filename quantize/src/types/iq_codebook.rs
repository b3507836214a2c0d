//! The IQ1–IQ3 codebooks in the form ggml's encoders search them (`iq2xs_init_impl` and
//! `iq3xs_init_impl` in ggml-quants.c): each point as levels `l` (stored magnitude `2l+1`), a map
//! from a group's packed levels to the point with those levels, and for every packing that is no
//! point, its nearest points. Built once per codebook on first use.
//!
//! ggml keeps these points as separate `kgrid_*` tables of packed levels; they are the decoding
//! grids of [`super::iq_grids`] with each byte replaced by its rank among the grid's byte values
//! (checked equal, table for table, when this was written), so smelt derives them instead of
//! carrying a second copy.

use std::sync::OnceLock;

use super::iq_grids::{IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID};
use super::lanes;

/// One codebook with its search tables.
pub struct Codebook {
    /// Values per point (8 for IQ1/IQ2, 4 for IQ3).
    pub dim: usize,
    /// Bits per level in a packed group.
    bits: u32,
    /// Each point's levels (the first `dim` bytes used).
    levels: Vec<[u8; 8]>,
    /// `kmap`: a packing's point index, or `-(list + 1)` of its neighbour list.
    map: Vec<i32>,
    /// Each neighbour list's start in `neighbours` and in `lanes`, and its length.
    lists: Vec<(u32, u32, u16)>,
    /// The neighbour lists' point indices, in ggml's order.
    neighbours: Vec<u16>,
    /// The same lists in blocks of 8 points: for each block, `dim` rows of 8 lanes (unused lanes
    /// 0), so that 8 candidates are scored at once. Each value is the level `l`, or with
    /// `magnitudes` the value `2l+1` the IQ2/IQ3 searches score (saves two operations per value).
    lanes: Vec<[f32; 8]>,
    /// Whether `lanes` holds magnitudes `2l+1` rather than levels.
    magnitudes: bool,
}

/// A packing's nearest points.
#[derive(Clone, Copy)]
pub struct Near<'a> {
    /// Point indices, in ggml's order.
    pub points: &'a [u16],
    /// Their levels or magnitudes, transposed in blocks of 8 (see [`Codebook`]).
    pub lanes: &'a [[f32; 8]],
}

/// What a packed group of levels is in a codebook.
pub enum Lookup<'a> {
    /// The point with exactly these levels.
    Point(usize),
    /// Not a point: the nearest points to try.
    Near(Near<'a>),
}

impl Codebook {
    /// Packs a group's levels as ggml indexes its map (`bits` per level, first value lowest).
    #[inline]
    pub fn pack(&self, l: &[i8]) -> usize {
        l.iter()
            .enumerate()
            .fold(0, |u, (i, &v)| u | (v as usize) << (self.bits as usize * i))
    }

    /// Looks up a packed group.
    #[inline]
    pub fn lookup(&self, packed: usize) -> Lookup<'_> {
        let m = self.map[packed];
        if m >= 0 {
            return Lookup::Point(m as usize);
        }
        let (at, lane, n) = self.lists[(-m - 1) as usize];
        let (at, lane, n) = (at as usize, lane as usize, n as usize);
        Lookup::Near(Near {
            points: &self.neighbours[at..at + n],
            lanes: &self.lanes[lane..lane + n.div_ceil(8) * self.dim],
        })
    }

    /// The point index of a group whose levels lie on the grid.
    #[inline]
    pub fn point_of(&self, l: &[i8]) -> Option<usize> {
        match self.lookup(self.pack(l)) {
            Lookup::Point(i) => Some(i),
            Lookup::Near(_) => None,
        }
    }

    /// The levels of point `i`.
    #[inline]
    pub fn levels(&self, i: usize) -> &[u8] {
        &self.levels[i][..self.dim]
    }

    /// The neighbour whose values `scale·(l + b)` are nearest `x` in the weighted squared
    /// distance `Σ w·(scale·q − x)²`, summed in value order; the first on ties. Its levels go to
    /// `l`. This is `iq1_find_best_neighbour2` (`b` the shifted −1 level), on a book of levels.
    /// (The IQ2/IQ3 searches, `iq2_find_best_neighbour` / `iq3_find_best_neighbour`, score the
    /// magnitudes `2l+1` inside [`lanes::snap_groups`].)
    pub fn best_neighbour(
        &self,
        near: Near<'_>,
        x: &[f32],
        w: &[f32],
        scale: f32,
        b: f32,
        l: &mut [i8],
    ) -> usize {
        debug_assert!(!self.magnitudes);
        let n = near.points.len();
        let at = match self.dim {
            8 => lanes::nearest_candidate::<8>(near.lanes, n, Some(b), scale, x, w),
            _ => lanes::nearest_candidate::<4>(near.lanes, n, Some(b), scale, x, w),
        };
        // ggml asserts that one scores below FLT_MAX; only non-finite input misses: keep the first.
        let best = near.points[at.unwrap_or(0)] as usize;
        self.copy_levels(best, l);
        best
    }

    /// Point `i`'s levels as a group of `G` (the book's `dim`).
    #[inline]
    pub fn point_levels<const G: usize>(&self, i: usize) -> [i8; G] {
        let l = &self.levels[i];
        std::array::from_fn(|k| l[k] as i8)
    }

    /// Writes point `i`'s levels into `l`.
    #[inline]
    fn copy_levels(&self, i: usize, l: &mut [i8]) {
        for (d, &s) in l.iter_mut().zip(self.levels(i)) {
            *d = s as i8;
        }
    }

    /// Builds the tables from a decoding grid given as each point's bytes; `magnitudes` as the
    /// field says.
    fn build(
        points: Vec<Vec<u8>>,
        bits: u32,
        map_size: usize,
        (max_level, nwant): (u8, usize),
        magnitudes: bool,
    ) -> Self {
        let dim = points[0].len();
        let mut values: Vec<u8> = points.iter().flatten().copied().collect();
        values.sort_by_key(|&b| b as i8);
        values.dedup();
        let levels: Vec<[u8; 8]> = points
            .iter()
            .map(|p| {
                let mut l = [0u8; 8];
                for (d, b) in l.iter_mut().zip(p) {
                    *d = values.iter().position(|v| v == b).unwrap() as u8;
                }
                l
            })
            .collect();
        let mut book = Codebook {
            dim,
            bits,
            levels,
            map: vec![-1; map_size],
            lists: Vec::new(),
            neighbours: Vec::new(),
            lanes: Vec::new(),
            magnitudes,
        };
        for (i, l) in book.levels.iter().enumerate() {
            let l: Vec<i8> = l[..dim].iter().map(|&v| v as i8).collect();
            let u = book.pack(&l);
            book.map[u] = i as i32;
        }
        // Encoders clamp levels to `max_level`, so only those packings are ever looked up.
        let mask = (1usize << bits) - 1;
        let reachable =
            |u: usize| (0..dim).all(|k| (u >> (bits as usize * k)) & mask <= max_level as usize);
        // Serial: this runs inside the encoders' parallel row tasks (through a `OnceLock`), where
        // a nested rayon loop can deadlock.
        let lists: Vec<(usize, Vec<u16>)> = (0..map_size)
            .filter(|&u| book.map[u] < 0 && reachable(u))
            .map(|u| (u, book.nearest(u, nwant)))
            .collect();
        for (u, list) in lists {
            book.map[u] = -(book.lists.len() as i32 + 1);
            let entry = (
                book.neighbours.len() as u32,
                book.lanes.len() as u32,
                list.len() as u16,
            );
            book.lists.push(entry);
            for block in list.chunks(8) {
                for i in 0..dim {
                    let row = std::array::from_fn(|k| {
                        block
                            .get(k)
                            .map_or(0.0, |&j| book.stored(book.levels[j as usize][i]))
                    });
                    book.lanes.push(row);
                }
            }
            book.neighbours.extend(list);
        }
        book
    }

    /// What `lanes` holds for level `l`.
    fn stored(&self, l: u8) -> f32 {
        if self.magnitudes {
            (2 * l as i32 + 1) as f32
        } else {
            l as f32
        }
    }

    /// The points at the `nwant` smallest squared distances from packing `u`, ordered by distance
    /// then index (what ggml's qsort of `(d2, j)` pairs and its cut give).
    fn nearest(&self, u: usize, nwant: usize) -> Vec<u16> {
        let mask = (1usize << self.bits) - 1;
        let pos: Vec<i32> = (0..self.dim)
            .map(|k| ((u >> (self.bits as usize * k)) & mask) as i32)
            .collect();
        let d2: Vec<i32> = self
            .levels
            .iter()
            .map(|l| {
                pos.iter()
                    .zip(l)
                    .map(|(&p, &q)| 4 * (q as i32 - p) * (q as i32 - p))
                    .sum()
            })
            .collect();
        let mut distinct: Vec<i32> = Vec::with_capacity(nwant + 1);
        for &d in &d2 {
            if let Err(at) = distinct.binary_search(&d) {
                if at < nwant {
                    distinct.insert(at, d);
                    distinct.truncate(nwant);
                }
            }
        }
        let cut = *distinct.last().unwrap();
        let mut near: Vec<u16> = (0..d2.len())
            .filter(|&j| d2[j] <= cut)
            .map(|j| j as u16)
            .collect();
        near.sort_by_key(|&j| d2[j as usize]);
        near
    }
}

fn bytes8(grid: &[u64]) -> Vec<Vec<u8>> {
    grid.iter().map(|g| g.to_le_bytes().to_vec()).collect()
}

fn bytes4(grid: &[u32]) -> Vec<Vec<u8>> {
    grid.iter().map(|g| g.to_le_bytes().to_vec()).collect()
}

/// Map sizes: every packing of 8 two-bit levels up to 2 (`0xAAAA + 2`), of 4 three-bit levels.
const MAP2: usize = 43692;
const MAP3: usize = 4096;

/// IQ2_XXS's 256 points (2 neighbour distances).
pub fn iq2_xxs() -> &'static Codebook {
    static B: OnceLock<Codebook> = OnceLock::new();
    B.get_or_init(|| Codebook::build(bytes8(&IQ2XXS_GRID), 2, MAP2, (2, 2), true))
}

/// IQ2_XS's 512 points (2 neighbour distances).
pub fn iq2_xs() -> &'static Codebook {
    static B: OnceLock<Codebook> = OnceLock::new();
    B.get_or_init(|| Codebook::build(bytes8(&IQ2XS_GRID), 2, MAP2, (2, 2), true))
}

/// IQ2_S's 1024 points (1 neighbour distance).
pub fn iq2_s() -> &'static Codebook {
    static B: OnceLock<Codebook> = OnceLock::new();
    B.get_or_init(|| Codebook::build(bytes8(&IQ2S_GRID), 2, MAP2, (2, 1), true))
}

/// IQ1_S's and IQ1_M's 2048 points (3 neighbour distances).
pub fn iq1() -> &'static Codebook {
    static B: OnceLock<Codebook> = OnceLock::new();
    B.get_or_init(|| Codebook::build(bytes8(&IQ1S_GRID), 2, MAP2, (2, 3), false))
}

/// IQ3_XXS's 256 points (2 neighbour distances).
pub fn iq3_xxs() -> &'static Codebook {
    static B: OnceLock<Codebook> = OnceLock::new();
    B.get_or_init(|| Codebook::build(bytes4(&IQ3XXS_GRID), 3, MAP3, (7, 2), true))
}

/// IQ3_S's 512 points (3 neighbour distances).
pub fn iq3_s() -> &'static Codebook {
    static B: OnceLock<Codebook> = OnceLock::new();
    B.get_or_init(|| Codebook::build(bytes4(&IQ3S_GRID), 3, MAP3, (7, 3), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_maps_to_itself_and_levels_follow_the_grid_bytes() {
        for book in [iq2_xxs(), iq2_xs(), iq2_s(), iq1(), iq3_xxs(), iq3_s()] {
            for i in 0..book.levels.len() {
                let l: Vec<i8> = book.levels(i).iter().map(|&v| v as i8).collect();
                assert_eq!(book.point_of(&l), Some(i));
            }
        }
        // First IQ2_XXS point 0x08…08 is all level 0; the second ends in 0x2b (level 2).
        assert_eq!(iq2_xxs().levels(1), [2, 0, 0, 0, 0, 0, 0, 0]);
        // IQ1's bytes are −1, 0, 1: levels 0, 1, 2.
        assert!(iq1().levels.iter().all(|l| l.iter().all(|&v| v <= 2)));
    }

    #[test]
    fn neighbours_are_the_nearest_points_in_distance_then_index_order() {
        let book = iq2_s();
        let l = [1i8, 1, 1, 1, 1, 1, 1, 1];
        let Lookup::Near(Near { points: near, .. }) = book.lookup(book.pack(&l)) else {
            panic!("all ones is not an IQ2_S point");
        };
        let d2 = |j: u16| -> i32 {
            book.levels(j as usize)
                .iter()
                .map(|&v| (v as i32 - 1) * (v as i32 - 1))
                .sum()
        };
        let best = (0..1024u16).map(d2).min().unwrap();
        let want: Vec<u16> = (0..1024u16).filter(|&j| d2(j) == best).collect();
        assert_eq!(near, want.as_slice());
    }
}
