//! `kiln-builder`: build context, cache keys, the solver and one handler per instruction.
