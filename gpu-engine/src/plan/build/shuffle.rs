//! Channel shuffles (ShuffleNet's Reshape → Transpose → Reshape), recognised across the three
//! nodes and run as one copy, or none where Splits read the halves.

use super::*;

/// A Reshape `reshape` of `x` to `[g, C/g, H, W]` and the Transpose `transpose` of those two
/// axes, not built yet (`Builder::channel_shuffle`).
#[derive(Clone, Copy)]
pub(super) struct ShuffleStart {
    pub(super) reshape: usize,
    pub(super) transpose: usize,
    pub(super) x: usize,
    pub(super) g: usize,
    /// x's `[C, H, W]`.
    pub(super) chw: [usize; 3],
}

impl Builder<'_> {
    /// ShuffleNet's channel shuffle, Reshape `i` of `x` (`[C, H, W]`) to `new` =
    /// `[g, C/g, H, W]`, alone read by a Transpose of those two axes, alone read by a Reshape
    /// back to `[C, H, W]`: one copy instead of the five a reshaped NHWC value costs (to row
    /// major, the transpose, back), or none when only Splits read it, each of its parts then
    /// copied straight from `x`. True when taken: the Reshape and the Transpose wait for the
    /// Reshape back (`shuffle_end`), whose target the exporter computes from the tensor's
    /// shape with nodes that come later.
    pub(super) fn channel_shuffle(&mut self, i: usize, x: usize, new: &[usize]) -> R<bool> {
        let (&[c, h, w], &[g, cg, h2, w2]) = (self.values[x].dims.as_slice(), new) else {
            return Ok(false);
        };
        if g < 2 || g * cg != c || (h2, w2) != (h, w) {
            return Ok(false);
        }
        let Some(t) = self.sole_consumer(&self.out(i)?, "Transpose") else {
            return Ok(false);
        };
        if self.perm(t, 5)? != [0, 2, 1, 3, 4] {
            return Ok(false);
        }
        let out_t = self.out(t)?;
        if self.sole_consumer(&out_t, "Reshape").is_none() {
            return Ok(false);
        }
        self.done[t] = true;
        self.shuffle_start.insert(
            out_t,
            ShuffleStart {
                reshape: i,
                transpose: t,
                x,
                g,
                chw: [c, h, w],
            },
        );
        Ok(true)
    }

    /// Reshape `r` of a channel shuffle's Transpose: when it restores `[C, H, W]`, the shuffle
    /// (true); otherwise the Reshape and the Transpose are built as they are, and `r` is left
    /// to build as any Reshape (false).
    pub(super) fn shuffle_end(&mut self, r: usize, s: ShuffleStart) -> R<bool> {
        let ShuffleStart {
            x,
            g,
            chw: [c, h, w],
            ..
        } = s;
        let back = self.reshape_target(r, &[c / g, g, h, w])?;
        if back.as_deref() != Some(&[c, h, w][..]) {
            self.reshape_to(s.reshape, x, vec![g, c / g, h, w])?;
            self.transpose(s.transpose)?;
            return Ok(false);
        }
        let name = self.out(r)?;
        if self.read_only_by(&name, |k| self.nodes[k].op_type == "Split") {
            self.shuffled.insert(name, (x, g));
        } else {
            self.shuffle_copy(&name, x, g);
        }
        Ok(true)
    }

    /// `x` channel-shuffled in `g` groups, copied into a new value `name`.
    pub(super) fn shuffle_copy(&mut self, name: &str, x: usize, g: usize) -> usize {
        let (dims, cl) = (self.values[x].dims.clone(), self.values[x].channels_last);
        let output = self.define(name, dims, cl);
        self.map(MapStep {
            shuffle: Some((1, g)),
            ..MapStep::copy(x, output)
        });
        output
    }
}
