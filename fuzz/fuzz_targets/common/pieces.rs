//! The input layout the piece-fed targets share: one byte `n`, then `n % 8` piece lengths (one
//! byte each, 0 = an empty feed), then the bytes on the wire; what is left after the last length
//! is the final piece.

/// Splits a fuzz input into (the wire bytes, the pieces to feed them in); `None` when the input
/// is too short to hold its own lengths.
pub fn split(data: &[u8]) -> Option<(&[u8], Vec<&[u8]>)> {
    let (&n, data) = data.split_first()?;
    let n = (n % 8) as usize;
    if data.len() < n {
        return None;
    }
    let (lengths, wire) = data.split_at(n);
    let mut pieces = Vec::new();
    let mut rest = wire;
    for &len in lengths {
        let (piece, after) = rest.split_at((len as usize).min(rest.len()));
        pieces.push(piece);
        rest = after;
    }
    pieces.push(rest);
    Some((wire, pieces))
}
