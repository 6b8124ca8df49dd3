;; Hostile: loads far outside its one page of linear memory.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (i32.load (i32.const 0x7fff0000)))))
