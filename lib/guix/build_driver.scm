;;; Lorica's build driver for the local build mode.
;;;
;;; Lorica runs it with the Guix of the server:
;;;
;;;   guix repl -- build_driver.scm [--timeout=N] [--max-silent-time=N]
;;;                                 [--max-jobs=N] DRV...
;;;   guix repl -- build_driver.scm --query DRV...
;;;
;;; Build mode opens a daemon connection with build traces, multiplexed
;;; build output and keep-going, builds every DRV that is in the store, and
;;; copies the daemon's stream to standard output:
;;;
;;;   @ build-started DRV - SYSTEM LOGFILE PID
;;;   @ build-log PID LEN          followed by exactly LEN bytes of output
;;;   @ build-succeeded DRV -
;;;   @ build-failed DRV - CODE MESSAGE...
;;;   <daemon messages, one a line>
;;;
;;; Builder output only ever appears inside `build-log' frames, so nothing a
;;; builder prints can be taken for an event.  The daemon's strings reach
;;; this script already decoded; the frames are re-counted here so that LEN
;;; is the exact number of UTF-8 bytes that follow.
;;;
;;; Query mode prints one line per DRV, `(state "DRV" STATE)', where STATE
;;; is `valid' (every output valid), `failed' (no valid output, but the
;;; daemon has a build log), `none' (neither) or `missing' (DRV itself is not
;;; in the store).
;;;
;;; Exit status: 0 all built (or answered), 1 some builds failed, 2 the
;;; driver could not do its work (usage, daemon connection).

(use-modules (guix store)
             (guix derivations)
             (rnrs bytevectors)
             (rnrs io ports)
             (ice-9 match)
             (srfi srfi-1))

(define (note fmt . args)
  "Print a diagnostic line on standard error."
  (apply format (current-error-port) (string-append "build-driver: " fmt "~%")
         args))

;;; Options.

(define (parse-arguments args)
  "Return an alist of options and the list of derivations from ARGS."
  (let loop ((args args) (options '()) (drvs '()))
    (define (number-option name value)
      (let ((n (string->number value)))
        (unless (and n (exact-integer? n) (>= n 0))
          (error "invalid option value" name value))
        (loop (cdr args) (acons name n options) drvs)))
    (match args
      (() (values options (reverse drvs)))
      (("--query" . rest) (loop rest (acons 'query #t options) drvs))
      ((arg . rest)
       (cond ((string-prefix? "--timeout=" arg)
              (number-option 'timeout (substring arg 10)))
             ((string-prefix? "--max-silent-time=" arg)
              (number-option 'max-silent-time (substring arg 18)))
             ((string-prefix? "--max-jobs=" arg)
              (number-option 'max-jobs (substring arg 11)))
             ((string-prefix? "/" arg)
              (loop rest options (cons arg drvs)))
             (else (error "unknown argument" arg)))))))

;;; Re-framing of the daemon stream.

(define (original-size char)
  "Bytes CHAR stood for in the daemon's stream.  The replacement character
comes from an invalid byte sequence of unknown length: count it as one
byte, so that a frame can only ever extend further, never end early."
  (let ((code (char->integer char)))
    (cond ((= code #xfffd) 1)
          ((< code #x80) 1)
          ((< code #x800) 2)
          ((< code #x10000) 3)
          (else 4))))

(define (frame-header line)
  "Return (PID . LEN) when LINE is a `@ build-log PID LEN' header, else #f."
  (match (string-split line #\space)
    (("@" "build-log" pid len)
     (let ((pid (string->number pid))
           (len (string->number len)))
       (and pid len (exact-integer? len) (>= len 0) (cons pid len))))
    (_ #f)))

(define max-line-length 65536)

(define (make-reframing-port out)
  "A textual port that copies the daemon stream written to it onto the
binary port OUT, re-counting every `build-log' frame in UTF-8 bytes."
  (define line '())                     ;reversed chars of the current line
  (define line-length 0)
  (define owed 0)                       ;original bytes left in the frame
  (define pid 0)

  (define (emit-frame text)
    (let ((bytes (string->utf8 text)))
      (unless (zero? (bytevector-length bytes))
        (put-bytevector out (string->utf8
                             (format #f "@ build-log ~a ~a~%" pid
                                     (bytevector-length bytes))))
        (put-bytevector out bytes))))

  (define (end-line!)
    (let ((text (list->string (reverse line))))
      (set! line '())
      (set! line-length 0)
      (match (frame-header text)
        ((frame-pid . len)
         (set! pid frame-pid)
         (set! owed len))
        (#f
         (put-bytevector out (string->utf8 text))
         (put-bytevector out #vu8(10))))))

  (define (write! str start count)
    (let ((end (+ start count)))
      (let loop ((i start))
        (when (< i end)
          (if (> owed 0)
              (let take ((j i) (left owed))
                (if (and (< j end) (> left 0))
                    (take (+ j 1) (- left (original-size (string-ref str j))))
                    (begin
                      (emit-frame (substring str i j))
                      (set! owed (max left 0))
                      (loop j))))
              (let ((char (string-ref str i)))
                (cond ((char=? char #\newline) (end-line!))
                      ((>= line-length max-line-length)
                       (end-line!)
                       (set! line (list char))
                       (set! line-length 1))
                      (else
                       (set! line (cons char line))
                       (set! line-length (+ 1 line-length))))
                (loop (+ i 1)))))))
    (force-output out)
    count)

  (define (close)
    (unless (null? line) (end-line!))
    (force-output out))

  (let ((port (make-custom-textual-output-port "lorica-build-stream"
                                               write! #f #f close)))
    (setvbuf port 'none)
    port))

;;; The two modes.

(define (derivation-state store drv)
  (cond ((not (valid-path? store drv)) 'missing)
        ((every (lambda (output) (valid-path? store output))
                (map (match-lambda ((_ . output) (derivation-output-path output)))
                     (derivation-outputs (read-derivation-from-file drv))))
         'valid)
        ((log-file store drv) 'failed)
        (else 'none)))

(define (query drvs)
  (with-store store
    (for-each (lambda (drv)
                (format #t "(state ~s ~a)~%" drv (derivation-state store drv)))
              drvs)
    (force-output (current-output-port))
    0))

(define (build drvs options)
  (define (option name default)
    (or (assq-ref options name) default))
  (with-store store
    (set-build-options store
                       #:keep-going? #t
                       #:fallback? #t
                       #:print-build-trace #t
                       #:print-extended-build-trace? #t
                       #:multiplexed-build-output? #t
                       #:max-build-jobs (option 'max-jobs 1)
                       #:timeout (option 'timeout 0)
                       #:max-silent-time (option 'max-silent-time 3600))
    (let* ((present (filter (lambda (drv) (valid-path? store drv)) drvs))
           (out (current-output-port))
           (stream (make-reframing-port out)))
      (for-each (lambda (drv)
                  (note "derivation missing from store: ~a" drv))
                (lset-difference string=? drvs present))
      (catch #t
        (lambda ()
          (parameterize ((current-build-output-port stream))
            (build-things store present))
          (close-port stream)
          0)
        (lambda (key . args)
          (close-port stream)
          (if (and (eq? key '%exception)
                   (pair? args)
                   (store-protocol-error? (car args)))
              (begin
                (note "~a" (store-protocol-error-message (car args)))
                1)
              (begin
                (note "build failed: ~a ~s" key args)
                2)))))))

(define (main args)
  (call-with-values (lambda () (parse-arguments args))
    (lambda (options drvs)
      (if (assq-ref options 'query)
          (query drvs)
          (build drvs options)))))

(exit
 (catch #t
   (lambda ()
     (let ((out (current-output-port)))
       (set-port-encoding! out "UTF-8")
       (main (cdr (command-line)))))
   (lambda (key . args)
     (note "cannot run: ~a ~s" key args)
     2)))
