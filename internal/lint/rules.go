package main

import (
	"fmt"
	"go/ast"
	"go/token"
	"strconv"
	"strings"
)

const (
	pathSyscall = "syscall"
	pathUnix    = "golang.org/x/sys/unix"
)

// checkPackage runs every rule over p.
func checkPackage(p *pkg) []finding {
	c := &checker{fset: p.Fset}
	for _, f := range p.Files {
		c.unsafeImport(f)
		c.rawSyscall(f)
		c.errCompare(f)
		if !f.isTest() {
			c.errText(f)
			c.notSupported(f)
		}
	}
	c.procParse(p)
	return c.out
}

type checker struct {
	fset *token.FileSet
	out  []finding
}

func (c *checker) add(f *file, pos token.Pos, rule, format string, args ...any) {
	p := c.fset.Position(pos)
	c.out = append(c.out, finding{File: f.Path, Line: p.Line, Col: p.Column, Rule: rule, Msg: fmt.Sprintf(format, args...)})
}

// unsafe

func (c *checker) unsafeImport(f *file) {
	if f.under("internal/kabi") || f.isUnsafeFile() {
		return
	}
	for _, is := range f.AST.Imports {
		if is.Path.Value == `"unsafe"` {
			c.add(f, is.Pos(), "unsafe", "import of unsafe outside internal/kabi: move the code to kabi, or to a file named *_unsafe.go")
		}
	}
}

// rawsyscall

var rawSyscalls = map[string]bool{
	"Syscall": true, "Syscall6": true, "RawSyscall": true, "RawSyscall6": true,
	"SyscallNoError": true, "RawSyscallNoError": true,
}

func (c *checker) rawSyscall(f *file) {
	if f.under("internal/kabi") || strings.HasSuffix(f.Path, "_unsafe_test.go") {
		return
	}
	ast.Inspect(f.AST, func(n ast.Node) bool {
		if name, ok := f.pkgFunc(asExpr(n), pathSyscall, pathUnix); ok && rawSyscalls[name] {
			sel := n.(*ast.SelectorExpr)
			c.add(f, n.Pos(), "rawsyscall", "%s.%s outside internal/kabi: give the call a typed wrapper in kabi (or use x/sys/unix's)", sel.X.(*ast.Ident).Name, name)
		}
		return true
	})
}

func asExpr(n ast.Node) ast.Expr {
	e, _ := n.(ast.Expr)
	return e
}

// errcmp

// errnoNames are the errno constants of x/sys/unix and syscall on Linux
// (zerrors_linux.go). A list, not a pattern: E[A-Z]+ also matches termios
// and epoll flags (ECHO, EPOLLIN) that are rightly compared with ==.
var errnoNames = setOf(`E2BIG EACCES EADDRINUSE EADDRNOTAVAIL EADV EAFNOSUPPORT EAGAIN EALREADY
	EBADE EBADF EBADFD EBADMSG EBADR EBADRQC EBADSLT EBFONT EBUSY ECANCELED ECHILD ECHRNG
	ECOMM ECONNABORTED ECONNREFUSED ECONNRESET EDEADLK EDEADLOCK EDESTADDRREQ EDOM EDOTDOT
	EDQUOT EEXIST EFAULT EFBIG EHOSTDOWN EHOSTUNREACH EHWPOISON EIDRM EILSEQ EINPROGRESS
	EINTR EINVAL EIO EISCONN EISDIR EISNAM EKEYEXPIRED EKEYREJECTED EKEYREVOKED EL2HLT
	EL2NSYNC EL3HLT EL3RST ELIBACC ELIBBAD ELIBEXEC ELIBMAX ELIBSCN ELNRNG ELOOP EMEDIUMTYPE
	EMFILE EMLINK EMSGSIZE EMULTIHOP ENAMETOOLONG ENAVAIL ENETDOWN ENETRESET ENETUNREACH
	ENFILE ENOANO ENOBUFS ENOCSI ENODATA ENODEV ENOENT ENOEXEC ENOKEY ENOLCK ENOLINK
	ENOMEDIUM ENOMEM ENOMSG ENONET ENOPKG ENOPROTOOPT ENOSPC ENOSR ENOSTR ENOSYS ENOTBLK
	ENOTCONN ENOTDIR ENOTEMPTY ENOTNAM ENOTRECOVERABLE ENOTSOCK ENOTSUP ENOTTY ENOTUNIQ
	ENXIO EOPNOTSUPP EOVERFLOW EOWNERDEAD EPERM EPFNOSUPPORT EPIPE EPROTO EPROTONOSUPPORT
	EPROTOTYPE ERANGE EREMCHG EREMOTE EREMOTEIO ERESTART ERFKILL EROFS ESHUTDOWN
	ESOCKTNOSUPPORT ESPIPE ESRCH ESRMNT ESTALE ESTRPIPE ETIME ETIMEDOUT ETOOMANYREFS
	ETXTBSY EUCLEAN EUNATCH EUSERS EWOULDBLOCK EXDEV EXFULL`)

func setOf(words string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(words) {
		m[w] = true
	}
	return m
}

// errValue reports whether e names an error value that errors.Is should
// match: an errno constant, a standard library sentinel (io.EOF,
// context.Canceled, os.ErrNotExist, ...), or by cryo's naming convention a
// sentinel of any package (ErrNotSupported, pkg.ErrImageCorrupt, errSilent).
func (f *file) errValue(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.ParenExpr:
		return f.errValue(e.X)
	case *ast.Ident:
		return isSentinelName(e.Name)
	case *ast.SelectorExpr:
		x, ok := e.X.(*ast.Ident)
		if !ok {
			return false
		}
		p, ok := f.Imports[x.Name]
		if !ok {
			return false
		}
		n := e.Sel.Name
		switch {
		case (p == pathSyscall || p == pathUnix) && errnoNames[n]:
			return true
		case p == "io" && n == "EOF",
			p == "context" && (n == "Canceled" || n == "DeadlineExceeded"):
			return true
		}
		return strings.HasPrefix(n, "Err") && isSentinelName(n)
	}
	return false
}

// isSentinelName: Err or err followed by an upper-case letter or digit
// (ErrGone, errSilent), but not Errno, errs or error.
func isSentinelName(n string) bool {
	if !strings.HasPrefix(n, "Err") && !strings.HasPrefix(n, "err") {
		return false
	}
	if len(n) == 3 {
		return false
	}
	c := n[3]
	return c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// isErrVar: a variable that by its name holds an error (err, statErr,
// errFoo). errno is not one: after a raw call it is a unix.Errno, rightly
// compared with 0.
func isErrVar(e ast.Expr) bool {
	id, ok := e.(*ast.Ident)
	if !ok {
		return false
	}
	return id.Name == "err" || strings.HasSuffix(id.Name, "Err") || isSentinelName(id.Name)
}

func isNil(e ast.Expr) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == "nil"
}

func (c *checker) errCompare(f *file) {
	for _, d := range f.AST.Decls {
		fd, ok := d.(*ast.FuncDecl)
		// An Is method is where errors.Is asks "is target me?": comparing
		// there is what makes errors.Is work.
		if ok && fd.Recv != nil && fd.Name.Name == "Is" {
			continue
		}
		ast.Inspect(d, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BinaryExpr:
				if (n.Op == token.EQL || n.Op == token.NEQ) && !isNil(n.X) && !isNil(n.Y) {
					for _, side := range []ast.Expr{n.X, n.Y} {
						if f.errValue(side) {
							c.add(f, n.OpPos, "errcmp", "%s %s %s: use errors.Is, which still matches once the error is wrapped", exprString(n.X), n.Op, exprString(n.Y))
							break
						}
					}
				}
			case *ast.SwitchStmt:
				if n.Tag == nil {
					break
				}
				for _, s := range n.Body.List {
					for _, e := range s.(*ast.CaseClause).List {
						if f.errValue(e) {
							c.add(f, e.Pos(), "errcmp", "switch %s { case %s: }: use case errors.Is(%s, %s), which still matches once the error is wrapped", exprString(n.Tag), exprString(e), exprString(n.Tag), exprString(e))
						}
					}
				}
			case *ast.TypeAssertExpr:
				// n.Type is nil in a type switch's x.(type): the switch
				// is reported below.
				if n.Type != nil && isErrVar(n.X) {
					c.add(f, n.Lparen, "errcmp", "%s.(%s): use errors.As, which still matches once the error is wrapped", exprString(n.X), exprString(n.Type))
				}
			case *ast.TypeSwitchStmt:
				var x ast.Expr
				switch a := n.Assign.(type) {
				case *ast.AssignStmt:
					x = a.Rhs[0]
				case *ast.ExprStmt:
					x = a.X
				}
				if ta, ok := x.(*ast.TypeAssertExpr); ok && isErrVar(ta.X) {
					c.add(f, n.Switch, "errcmp", "switch %s.(type): use errors.As, which still matches once the error is wrapped", exprString(ta.X))
				}
			}
			return true
		})
	}
}

// errtext

// textMatchers are the strings functions that look into a string.
var textMatchers = setOf(`Contains ContainsAny ContainsFunc ContainsRune HasPrefix HasSuffix
	Index IndexAny IndexByte IndexFunc IndexRune LastIndex LastIndexAny EqualFold Count
	Cut CutPrefix CutSuffix Compare`)

// regexpMatchers are the methods of *regexp.Regexp that take a string.
var regexpMatchers = setOf(`MatchString FindString FindStringIndex FindStringSubmatch
	FindStringSubmatchIndex FindAllString FindAllStringIndex FindAllStringSubmatch`)

func isErrorCall(e ast.Expr) bool {
	call, ok := e.(*ast.CallExpr)
	if !ok || len(call.Args) != 0 {
		return false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	return ok && sel.Sel.Name == "Error"
}

func (c *checker) errText(f *file) {
	for _, d := range f.AST.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Body == nil {
			continue
		}
		// Variables that hold an error's text (msg := err.Error()), by
		// name within this function.
		text := map[string]bool{}
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			if a, ok := n.(*ast.AssignStmt); ok && len(a.Lhs) == len(a.Rhs) {
				for i, r := range a.Rhs {
					if id, ok := a.Lhs[i].(*ast.Ident); ok && isErrorCall(r) {
						text[id.Name] = true
					}
				}
			}
			return true
		})
		isText := func(e ast.Expr) bool {
			if id, ok := e.(*ast.Ident); ok {
				return text[id.Name]
			}
			return isErrorCall(e)
		}
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				name, isStrings := f.pkgFunc(n.Fun, "strings")
				sel, isMethod := n.Fun.(*ast.SelectorExpr)
				if !(isStrings && textMatchers[name]) && !(!isStrings && isMethod && regexpMatchers[sel.Sel.Name]) {
					break
				}
				for _, a := range n.Args {
					if isText(a) {
						c.add(f, n.Pos(), "errtext", "%s decides by an error's text: match a sentinel with errors.Is or a type with errors.As", exprString(n.Fun))
						break
					}
				}
			case *ast.BinaryExpr:
				if (n.Op == token.EQL || n.Op == token.NEQ) && (isText(n.X) || isText(n.Y)) {
					c.add(f, n.OpPos, "errtext", "comparing an error's text: match a sentinel with errors.Is or a type with errors.As")
				}
			case *ast.SwitchStmt:
				if n.Tag != nil && isText(n.Tag) {
					c.add(f, n.Switch, "errtext", "switch on an error's text: match a sentinel with errors.Is or a type with errors.As")
				}
			}
			return true
		})
	}
}

// notsupported

func saysNotSupported(s string) bool {
	s = strings.ToLower(s)
	return strings.Contains(s, "not supported") || strings.Contains(s, "unsupported")
}

func (c *checker) notSupported(f *file) {
	if f.under("internal/errs") {
		return
	}
	ast.Inspect(f.AST, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) == 0 {
			return true
		}
		lit, ok := call.Args[0].(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return true
		}
		s, err := strconv.Unquote(lit.Value)
		if err != nil || !saysNotSupported(s) {
			return true
		}
		if name, ok := f.pkgFunc(call.Fun, "errors"); ok && name == "New" {
			c.add(f, call.Pos(), "notsupported", "errors.New(%s) makes a second \"not supported\": wrap errs.ErrNotSupported (fmt.Errorf(\"...: %%w\", errs.ErrNotSupported))", lit.Value)
			return true
		}
		if name, ok := f.pkgFunc(call.Fun, "fmt"); ok && name == "Errorf" {
			wraps := false
			for _, a := range call.Args[1:] {
				if lastName(a) == "ErrNotSupported" {
					wraps = true
				}
			}
			if !wraps || !strings.Contains(s, "%w") {
				c.add(f, call.Pos(), "notsupported", "fmt.Errorf(%s) says \"not supported\" without wrapping ErrNotSupported: errors.Is(err, errs.ErrNotSupported) would miss it", lit.Value)
			}
		}
		return true
	})
}

func lastName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return e.Sel.Name
	}
	return ""
}

// procparse

// parseFuncs split or scan text; fed with /proc contents they are an
// unbounded, unfuzzed parser.
var parseFuncs = map[string]map[string]bool{
	"strings": setOf(`Split SplitN SplitAfter SplitAfterN SplitSeq SplitAfterSeq Fields FieldsFunc FieldsSeq FieldsFuncSeq Cut Lines`),
	"bytes":   setOf(`Split SplitN SplitAfter SplitAfterN SplitSeq SplitAfterSeq Fields FieldsFunc FieldsSeq FieldsFuncSeq Cut Lines`),
	"fmt":     setOf(`Sscanf Sscan Sscanln Fscanf Fscan Fscanln`),
	"bufio":   setOf(`NewScanner`),
}

func isProcPath(s string) bool { return s == "/proc" || strings.HasPrefix(s, "/proc/") }

type fnInfo struct {
	file     *file
	name     string
	procLit  string      // a /proc path the function names, or ""
	parses   []token.Pos // calls of parseFuncs
	parseFns []string
	callees  []string // keys of functions it calls, see funcKey
}

// funcKey names a function for the package-local call graph. Without types
// a method call x.m() is known by m alone: every method m of the package
// is taken as a possible callee.
func funcKey(method bool, name string) string {
	if method {
		return "m." + name
	}
	return "f." + name
}

func (c *checker) procParse(p *pkg) {
	var files []*file
	for _, f := range p.Files {
		if f.isProduction() && !f.under("internal/procfs") {
			files = append(files, f)
		}
	}
	if len(files) == 0 {
		return
	}
	// Package-level constants and variables that hold a /proc path: a
	// function naming one names the path.
	procNames := map[string]string{}
	for _, f := range files {
		for _, d := range f.AST.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || (gd.Tok != token.CONST && gd.Tok != token.VAR) {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				for i, v := range vs.Values {
					if lit := procLiteral(v); lit != "" && i < len(vs.Names) {
						procNames[vs.Names[i].Name] = lit
					}
				}
			}
		}
	}
	var fns []*fnInfo
	byKey := map[string][]*fnInfo{}
	for _, f := range files {
		for _, d := range f.AST.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			fi := &fnInfo{file: f, name: fd.Name.Name}
			if fd.Recv != nil && len(fd.Recv.List) == 1 {
				fi.name = recvName(fd.Recv.List[0].Type) + "." + fd.Name.Name
			}
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.BasicLit:
					if lit := procLiteral(n); lit != "" && fi.procLit == "" {
						fi.procLit = lit
					}
				case *ast.Ident:
					if lit, ok := procNames[n.Name]; ok && fi.procLit == "" {
						fi.procLit = lit
					}
				case *ast.CallExpr:
					switch fun := n.Fun.(type) {
					case *ast.Ident:
						fi.callees = append(fi.callees, funcKey(false, fun.Name))
					case *ast.SelectorExpr:
						x, isIdent := fun.X.(*ast.Ident)
						if isIdent {
							if path, ok := f.Imports[x.Name]; ok {
								if parseFuncs[path][fun.Sel.Name] {
									fi.parses = append(fi.parses, n.Pos())
									fi.parseFns = append(fi.parseFns, x.Name+"."+fun.Sel.Name)
								}
								break
							}
						}
						fi.callees = append(fi.callees, funcKey(true, fun.Sel.Name))
					}
				}
				return true
			})
			fns = append(fns, fi)
			byKey[funcKey(fd.Recv != nil, fd.Name.Name)] = append(byKey[funcKey(fd.Recv != nil, fd.Name.Name)], fi)
		}
	}
	// A function that names a /proc path hands what it read to the
	// functions it calls: they parse it as surely as if they had read it.
	via := map[*fnInfo]*fnInfo{}
	for _, g := range fns {
		if g.procLit == "" {
			continue
		}
		for _, k := range g.callees {
			for _, callee := range byKey[k] {
				if callee.procLit == "" && via[callee] == nil {
					via[callee] = g
				}
			}
		}
	}
	for _, fi := range fns {
		if len(fi.parses) == 0 {
			continue
		}
		switch {
		case fi.procLit != "":
			c.add(fi.file, fi.parses[0], "procparse", "%s reads %s and parses it with %s: move the parser to internal/procfs (bounded, golden-tested, fuzzed)", fi.name, fi.procLit, strings.Join(dedup(fi.parseFns), ", "))
		case via[fi] != nil:
			c.add(fi.file, fi.parses[0], "procparse", "%s parses with %s what its caller %s read from %s: move the parser to internal/procfs (bounded, golden-tested, fuzzed)", fi.name, strings.Join(dedup(fi.parseFns), ", "), via[fi].name, via[fi].procLit)
		}
	}
}

// procLiteral returns the string of a literal /proc path in e (a literal,
// or the first operand of a concatenation), or "".
func procLiteral(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return ""
		}
		s, err := strconv.Unquote(e.Value)
		if err == nil && isProcPath(s) {
			return s
		}
	case *ast.BinaryExpr:
		return procLiteral(e.X)
	}
	return ""
}

func recvName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.StarExpr:
		return recvName(e.X)
	case *ast.Ident:
		return e.Name
	case *ast.IndexExpr:
		return recvName(e.X)
	case *ast.IndexListExpr:
		return recvName(e.X)
	}
	return "?"
}

func dedup(s []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// exprString renders short expressions for messages.
func exprString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return exprString(e.X) + "." + e.Sel.Name
	case *ast.StarExpr:
		return "*" + exprString(e.X)
	case *ast.ParenExpr:
		return "(" + exprString(e.X) + ")"
	case *ast.CallExpr:
		return exprString(e.Fun) + "(...)"
	case *ast.BasicLit:
		return e.Value
	case *ast.IndexExpr:
		return exprString(e.X) + "[...]"
	}
	return "…"
}
