;;; Prints what a Cuirass specification file evaluates to, for Lorica.
;;;
;;;   guix repl -- print_specs.scm FILE
;;;
;;; FILE may hold any Scheme; its forms are evaluated in order with (guix
;;; channels) in scope and `specification', `build-output', `email' and
;;; `mastodon' defined here (Cuirass's own modules are not needed).  The
;;; last value, a list of specifications, is written on standard output as
;;; one expression of the declarative subset Lorica's reader understands.

(use-modules (guix channels)
             (rnrs bytevectors)
             (ice-9 match))

(define-syntax-rule (define-record-form name)
  (define-syntax name
    (syntax-rules ()
      ((_ (field value) (... ...))
       (list 'name (cons 'field value) (... ...))))))

(define-record-form specification)
(define-record-form build-output)
(define-record-form email)
(define-record-form mastodon)

(define (fingerprint->hex bytes)
  (string-concatenate
   (map (lambda (byte) (string-pad (number->string byte 16) 2 #\0))
        (bytevector->u8-list bytes))))

(define (channel->form channel)
  `(channel (name (quote ,(channel-name channel)))
            (url ,(channel-url channel))
            (branch ,(channel-branch channel))
            ,@(if (channel-commit channel)
                  `((commit ,(channel-commit channel)))
                  '())
            ,@(match (channel-introduction channel)
                (#f '())
                (intro
                 `((introduction
                    (make-channel-introduction
                     ,(channel-introduction-first-signed-commit intro)
                     (openpgp-fingerprint
                      ,(fingerprint->hex
                        (channel-introduction-first-commit-signer intro))))))))))

(define (record->form record)
  (match record
    ((kind (fields . values) ...)
     `(,kind ,@(map list fields values)))))

(define (field->form field value)
  (case field
    ((name) (list field (if (symbol? value) (symbol->string value) value)))
    ((build systems) (list field (list 'quote value)))
    ((channels) (list field `(list ,@(map channel->form value))))
    ((build-outputs notifications)
     (list field `(list ,@(map record->form value))))
    (else (list field value))))

(define (specification->form spec)
  (match spec
    (('specification (fields . values) ...)
     `(specification ,@(map field->form fields values)))
    (_ (error "not a specification" spec))))

(define (evaluate-file file)
  "Evaluate the forms of FILE in order; return the last value."
  (call-with-input-file file
    (lambda (port)
      (let loop ((value #f))
        (match (read port)
          ((? eof-object?) value)
          (('use-modules modules ...)
           (for-each (lambda (module)
                       (unless (and (pair? module) (eq? (car module) 'cuirass))
                         (eval `(use-modules ,module) (current-module))))
                     modules)
           (loop value))
          (form (loop (eval form (current-module)))))))))

(match (command-line)
  ((_ file)
   (let ((specs (evaluate-file file)))
     (write `(list ,@(map specification->form specs)))
     (newline)))
  (_
   (format (current-error-port) "usage: guix repl -- print_specs.scm FILE~%")
   (exit 2)))
