//! The replay budget of docs/design.md#registry-invariants: the replay copies one VM holds at once stay within
//! `redispatch.max_buffered_bytes`. A copy is charged before it is allocated, and its bytes come
//! back when its [`Hold`] shrinks or is dropped, so every way a request ends (completion, a reset
//! and the context's deletion, a local reply, a decision that nothing will be replayed) returns
//! them without the glue having to remember to.

use std::cell::Cell;
use std::rc::Rc;

/// The bytes the replay copies of one VM hold. One per VM: a VM runs one callback at a time, so
/// a plain `Cell` is exact.
#[derive(Debug, Default)]
pub struct Budget {
    used: Cell<usize>,
}

impl Budget {
    pub fn used(&self) -> usize {
        self.used.get()
    }
}

/// One request's share of a [`Budget`], checked against `limit` (its configuration's
/// `max_buffered_bytes`; configurations sharing the VM share the bytes).
#[derive(Debug)]
pub struct Hold {
    budget: Rc<Budget>,
    limit: usize,
    held: usize,
}

impl Hold {
    pub fn new(budget: Rc<Budget>, limit: usize) -> Self {
        Hold {
            budget,
            limit,
            held: 0,
        }
    }

    /// A hold on a budget of its own with no limit (tests and tools that build a replay alone).
    pub fn unlimited() -> Self {
        Hold::new(Rc::new(Budget::default()), usize::MAX)
    }

    pub fn held(&self) -> usize {
        self.held
    }

    /// Grows this hold to `total` bytes if the VM's copies then stay within the limit; false (and
    /// nothing changed) if they would not.
    pub fn grow_to(&mut self, total: usize) -> bool {
        let Some(extra) = total.checked_sub(self.held) else {
            return true;
        };
        match self.budget.used.get().checked_add(extra) {
            Some(used) if used <= self.limit => {
                self.budget.used.set(used);
                self.held = total;
                true
            }
            _ => false,
        }
    }

    /// Records `total` bytes whatever the limit: for an allocation already made (an allocator
    /// that gave more than asked). Never used to decide whether to copy.
    pub fn force_to(&mut self, total: usize) {
        if let Some(extra) = total.checked_sub(self.held) {
            let used = self.budget.used.get().saturating_add(extra);
            self.budget.used.set(used);
            self.held = total;
        }
    }

    /// Gives back everything above `total` bytes.
    pub fn shrink_to(&mut self, total: usize) {
        if let Some(back) = self.held.checked_sub(total) {
            let used = self.budget.used.get().saturating_sub(back);
            self.budget.used.set(used);
            self.held = total;
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_share_one_budget_up_to_each_limit() {
        let b = Rc::new(Budget::default());
        let mut x = Hold::new(b.clone(), 100);
        let mut y = Hold::new(b.clone(), 100);
        assert!(x.grow_to(60));
        assert!(!y.grow_to(41), "would be 101 bytes");
        assert_eq!((b.used(), y.held()), (60, 0));
        assert!(y.grow_to(40));
        assert_eq!(b.used(), 100);
        // A configuration with a smaller limit sees the VM's bytes, not only its own.
        let mut z = Hold::new(b.clone(), 150);
        assert!(z.grow_to(50));
        assert!(!Hold::new(b.clone(), 120).grow_to(1));
        x.shrink_to(10);
        assert_eq!(b.used(), 100);
        drop(y);
        drop(z);
        assert_eq!(b.used(), 10);
        drop(x);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn growing_to_less_or_shrinking_to_more_changes_nothing() {
        let b = Rc::new(Budget::default());
        let mut x = Hold::new(b.clone(), 10);
        assert!(x.grow_to(8));
        assert!(x.grow_to(3));
        x.shrink_to(9);
        assert_eq!((b.used(), x.held()), (8, 8));
        x.force_to(12);
        assert_eq!((b.used(), x.held()), (12, 12));
        assert!(!x.grow_to(13));
        drop(x);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn sizes_near_the_top_of_usize_neither_wrap_nor_pass() {
        let b = Rc::new(Budget::default());
        let mut x = Hold::new(b.clone(), usize::MAX);
        assert!(x.grow_to(usize::MAX - 1));
        let mut y = Hold::new(b.clone(), usize::MAX);
        assert!(!y.grow_to(2));
        y.force_to(5);
        assert_eq!(b.used(), usize::MAX);
        drop(y);
        drop(x);
        assert_eq!(b.used(), 0);
    }
}
