//! Backend expressions: `Name`, `Name[Inner]`, `Name[A,B,C]`, nested, whitespace allowed.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expr {
    pub name: String,
    pub args: Vec<Expr>,
}

impl Expr {
    pub fn leaf(name: &str) -> Self {
        Expr {
            name: name.to_string(),
            args: Vec::new(),
        }
    }

    /// Every name in the tree, depth first (the registry checks them all at load time).
    pub fn walk<'a>(&'a self, out: &mut Vec<&'a Expr>) {
        out.push(self);
        for arg in &self.args {
            arg.walk(out);
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.args.is_empty() {
            f.write_str("[")?;
            for (i, arg) in self.args.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{arg}")?;
            }
            f.write_str("]")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub position: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at character {}", self.message, self.position + 1)
    }
}

pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let mut parser = Parser {
        chars: text.char_indices().collect(),
        pos: 0,
        depth: 0,
    };
    let expr = parser.expr()?;
    parser.skip_ws();
    if let Some(&(at, c)) = parser.chars.get(parser.pos) {
        return Err(ParseError {
            position: at,
            message: format!("unexpected `{c}` after the expression"),
        });
    }
    Ok(expr)
}

struct Parser {
    chars: Vec<(usize, char)>,
    pos: usize,
    depth: usize,
}

// Nesting deeper than this is a typo, not a pipeline; the bound also keeps recursion finite.
const MAX_DEPTH: usize = 32;

impl Parser {
    fn skip_ws(&mut self) {
        while self
            .chars
            .get(self.pos)
            .is_some_and(|(_, c)| c.is_whitespace())
        {
            self.pos += 1;
        }
    }

    fn offset(&self) -> usize {
        self.chars
            .get(self.pos)
            .map(|&(at, _)| at)
            .unwrap_or_else(|| self.chars.last().map_or(0, |&(at, c)| at + c.len_utf8()))
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError {
                position: self.offset(),
                message: format!("nesting deeper than {MAX_DEPTH}"),
            });
        }
        self.skip_ws();
        let start = self.pos;
        while self
            .chars
            .get(self.pos)
            .is_some_and(|&(_, c)| c.is_alphanumeric() || "_:.-".contains(c))
        {
            self.pos += 1;
        }
        if self.pos == start {
            let message = match self.chars.get(self.pos) {
                Some((_, c)) => format!("expected a backend name, found `{c}`"),
                None => "expected a backend name, found the end".to_string(),
            };
            return Err(ParseError {
                position: self.offset(),
                message,
            });
        }
        let name: String = self.chars[start..self.pos]
            .iter()
            .map(|&(_, c)| c)
            .collect();
        let mut args = Vec::new();
        self.skip_ws();
        if self.chars.get(self.pos).is_some_and(|&(_, c)| c == '[') {
            self.pos += 1;
            loop {
                args.push(self.expr()?);
                self.skip_ws();
                match self.chars.get(self.pos) {
                    Some(&(_, ',')) => self.pos += 1,
                    Some(&(_, ']')) => {
                        self.pos += 1;
                        break;
                    }
                    Some(&(_, c)) => {
                        return Err(ParseError {
                            position: self.offset(),
                            message: format!("expected `,` or `]`, found `{c}`"),
                        })
                    }
                    None => {
                        return Err(ParseError {
                            position: self.offset(),
                            message: format!("missing `]` to close `{name}[`"),
                        })
                    }
                }
            }
        }
        self.depth -= 1;
        Ok(Expr { name, args })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_lists_with_whitespace() {
        let e = parse(" SyncTensor[ Sequential[ResizeMat, cvtColorMat ,Mat2Tensor] ] ").unwrap();
        assert_eq!(e.name, "SyncTensor");
        assert_eq!(e.args.len(), 1);
        let seq = &e.args[0];
        assert_eq!(seq.name, "Sequential");
        let names: Vec<_> = seq.args.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["ResizeMat", "cvtColorMat", "Mat2Tensor"]);
        assert_eq!(
            e.to_string(),
            "SyncTensor[Sequential[ResizeMat,cvtColorMat,Mat2Tensor]]"
        );
    }

    #[test]
    fn parses_a_plain_name() {
        assert_eq!(parse("DecodeMat").unwrap(), Expr::leaf("DecodeMat"));
    }

    #[test]
    fn rejects_malformed_expressions_with_positions() {
        let err = parse("Sequential[A,B").unwrap_err();
        assert!(err.message.contains("missing `]`"), "{err}");
        let err = parse("A[B]]").unwrap_err();
        assert_eq!(err.position, 4);
        let err = parse("A[,B]").unwrap_err();
        assert!(err.message.contains("expected a backend name"), "{err}");
        assert!(parse("").is_err());
        assert!(parse("A B").is_err());
        let deep = "A[".repeat(40) + "B" + &"]".repeat(40);
        assert!(parse(&deep).unwrap_err().message.contains("nesting"));
    }
}
