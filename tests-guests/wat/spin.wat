;; Hostile: an infinite loop in _start (no host calls).
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $forever (br $forever))))
