;;; Lorica's evaluator for GNU Guix (see notes/EVALUATOR_CONTRACT.md).
;;;
;;; Lorica runs it inside the pinned Guix as
;;;
;;;   guix time-machine -C CHANNELS -- repl -- evaluate.scm BUILD SYSTEM
;;;
;;; BUILD is a build selector in `write' syntax (`all', `(packages "hello")',
;;; `(channels guix)', ...) and SYSTEM a system type such as "x86_64-linux".
;;; The jobs come from Guix's own `cuirass-jobs' in (gnu ci), the entry point
;;; Cuirass evaluations use, so both farms see the same job set.
;;;
;;; Standard output carries only data, one datum per line:
;;;
;;;   (job (name N) (derivation D) (system S) (nix-name X)
;;;        (outputs (OUT PATH) ...) (inputs DRV ...)
;;;        (timeout SECONDS) (max-silent-time SECONDS))
;;;   ...
;;;   (done COUNT)
;;;
;;; Progress and errors go to standard error; any failure exits with 1.

(use-modules (gnu ci)
             (guix channels)
             (guix derivations)
             (guix describe)
             (guix store)
             ((guix git) #:select (update-cached-checkout))
             (ice-9 exceptions)
             (ice-9 match)
             (srfi srfi-1))

;; Defaults for job properties, used when `cuirass-jobs' leaves them out
;; (older Guix versions do for some kinds of jobs).
(define default-timeout 72000)
(define default-max-silent-time 3600)

(define (note fmt . args)
  "Print a progress line on standard error."
  (apply format (current-error-port) (string-append "evaluate: " fmt "~%")
         args))

(define (parse-build text)
  "Turn the selector TEXT into the datum `cuirass-jobs' expects as `subset'."
  (let ((datum (call-with-input-string text read)))
    (when (eof-object? datum)
      (error "empty build selector" text))
    datum))

(define (needs-checkouts? subset)
  "True when SUBSET reads files from the channel sources themselves, so that
the channel URLs handed to `cuirass-jobs' must be local checkout directories."
  (match subset
    ((or 'guix 'images 'system-tests) #t)
    (((or 'manifests 'custom) . _) #t)
    (_ #f)))

(define (local-checkout channel)
  "The directory of CHANNEL's cached git checkout at its commit, which
`guix time-machine' has just filled; fall back to the channel's URL."
  (let ((url (channel-url channel))
        (commit (channel-commit channel)))
    (if commit
        (catch #t
          (lambda ()
            (call-with-values
                (lambda ()
                  (update-cached-checkout url #:ref (cons 'commit commit)))
              (lambda (directory . _) directory)))
          (lambda (key . args)
            (note "cannot find a checkout of ~a (~a); using its URL" url key)
            url))
        url)))

(define (channel->sexp channel use-checkout?)
  "Describe CHANNEL the way Cuirass hands channel instances to `cuirass-jobs'."
  `(repository (version 0)
               (url ,(if use-checkout? (local-checkout channel)
                         (channel-url channel)))
               (branch ,(channel-branch channel))
               (commit ,(channel-commit channel))
               (name ,(channel-name channel))))

(define (running-channels)
  "The channels of the Guix running this script (those of the time machine)."
  (match (current-channels)
    (() %default-channels)                ;e.g. when run from a source tree
    (channels channels)))

(define (job-property job key default)
  (match (assq key job)
    ((_ . value) value)
    (#f default)))

(define (as-string value)
  (if (symbol? value) (symbol->string value) value))

(define (derivation-input-files file)
  "The .drv file names of the direct inputs of the derivation in FILE."
  (map derivation-input-path
       (derivation-inputs (read-derivation-from-file file))))

(define (job->datum job)
  "The contract line for JOB, an alist returned by `cuirass-jobs'."
  (let ((drv (job-property job #:derivation #f)))
    (unless (string? drv)
      (error "job without a derivation" job))
    `(job (name ,(as-string (job-property job #:job-name #f)))
          (derivation ,drv)
          (system ,(job-property job #:system #f))
          (nix-name ,(job-property job #:nix-name #f))
          (outputs ,@(map (match-lambda
                            ((output . path) (list (as-string output) path)))
                          (job-property job #:outputs '())))
          (inputs ,@(derivation-input-files drv))
          (timeout ,(or (job-property job #:timeout #f) default-timeout))
          (max-silent-time ,(or (job-property job #:max-silent-time #f)
                                default-max-silent-time)))))

(define (evaluate build system out)
  "Compute the jobs of BUILD for SYSTEM and print them to OUT."
  (let* ((subset (parse-build build))
         (checkouts? (needs-checkouts? subset))
         (channels (map (lambda (channel) (channel->sexp channel checkouts?))
                        (running-channels)))
         (arguments `((subset . ,subset)
                      (systems . (,system))
                      (channels . ,channels))))
    (note "evaluating ~s for ~a" subset system)
    (with-store store
      ;; Whatever Guix prints while computing derivations must stay off
      ;; standard output, which carries only the job data.
      (let ((jobs (with-output-to-port (current-error-port)
                    (lambda () (cuirass-jobs store arguments)))))
        (for-each (lambda (job)
                    (write (job->datum job) out)
                    (newline out))
                  jobs)
        (write `(done ,(length jobs)) out)
        (newline out)
        (force-output out)
        (note "~a jobs" (length jobs))))))

(define (describe-error key args)
  "A readable one-line description of the error thrown as KEY with ARGS."
  (match args
    (((? exception-with-message? exception))
     (format #f "~a~{ ~s~}" (exception-message exception)
             (if (exception-with-irritants? exception)
                 (exception-irritants exception)
                 '())))
    ((_ (? string? message) (? list? message-args) . _)
     (apply format #f message message-args))
    (_ (format #f "~a ~s" key args))))

(define (main args)
  "Run the evaluation for ARGS; return the exit status."
  (match args
    ((_ build system)
     (let ((out (current-output-port)))
       (set-port-encoding! out "UTF-8")
       (evaluate build system out)
       0))
    (_
     (note "usage: guix repl -- evaluate.scm BUILD SYSTEM")
     1)))

(exit
 (catch #t
   (lambda ()
     (main (command-line)))
   (lambda (key . args)
     (note "evaluation failed: ~a" (describe-error key args))
     1)
   (lambda (key . args)
     ;; Runs before unwinding, while the failing frames still exist.
     (display-backtrace (make-stack #t) (current-error-port)))))
