//! State-machine tests: every action precondition and transition, on a real store and file pool.
