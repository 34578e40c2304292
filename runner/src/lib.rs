//! `kiln-runner`: runs one process tree in an isolated sandbox over a root filesystem it is given,
//! and reports how it ended. Knows nothing of images or layers.
