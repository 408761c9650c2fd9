"""python -m acfd"""

from acfd.cli import main

if __name__ == "__main__":
    main()
