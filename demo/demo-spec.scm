;; Cuirass specification of the Lorica demo (written by make_scenario.ts).
;; The fake guix evaluates it against demo/scenario.json.
(list (specification
       (name "demo")
       (build 'all)
       (channels (list %default-guix-channel))
       (priority 2)
       (systems (list "x86_64-linux" "i686-linux"))
       ;; Offered for download at /download/ID once built.
       (build-outputs
        (list (build-output
               (job "^libunistring[.]")
               (type "data")
               (output "out")
               (path "share/libunistring-1.3/data"))))))
